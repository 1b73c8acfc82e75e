// Images: PNG and BMP through Debian's stb (stb_image to read, stb_image_write to write PNG), JPEG
// through libjpeg-turbo (Debian's libjpeg62-turbo). Only the formats minigrad documents are compiled
// into stb (PNG, BMP): the others' decoders are not reachable from a file, and each file's header is
// checked before it is decoded. Every allocation stb makes goes through a cap set per file from its
// declared size (stb_alloc_cap): a PNG whose IDAT declares more bytes than the file has, or whose
// deflate stream inflates past the image, makes stb fail ("outofmem") instead of allocating what the
// file asks for. libjpeg gets the same cap (max_memory_to_use) and a limit on progressive scans.
#include <cstddef>
#include <cstdlib>
namespace minigrad::io {
namespace {
thread_local size_t stb_alloc_cap = 0;  // 0: stb is not decoding a file for load_image
thread_local bool stb_cap_refused = false;
bool over_cap(size_t n) { return stb_alloc_cap && n > stb_alloc_cap && (stb_cap_refused = true); }
void* stb_malloc(size_t n) { return over_cap(n) ? nullptr : std::malloc(n); }
void* stb_realloc(void* p, size_t n) { return over_cap(n) ? nullptr : std::realloc(p, n); }
}  // namespace
}  // namespace minigrad::io
#define STBI_MALLOC(sz) ::minigrad::io::stb_malloc(sz)
#define STBI_REALLOC(p, newsz) ::minigrad::io::stb_realloc(p, newsz)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 20)
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <csetjmp>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including them
#include <cstring>
#include <jpeglib.h>
#include <jerror.h>  // after jpeglib.h: the message codes

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "dataset.h"

namespace minigrad::io {

namespace {

// JPEG through libjpeg. Its errors longjmp back here (error_exit may not return); warnings, which
// libjpeg gives for corrupt data it then decodes anyway (a truncated file, bad entropy data), are
// errors too, so a damaged file never loads as an image with gray blocks. Four warnings leave the
// pixels as they are and stay warnings (dropped): junk bytes between markers (common in files from
// cameras and editors; PIL and stb load them too), an unknown JFIF revision or Adobe transform code,
// and a bad ICC profile (not read here). No C++ object with a destructor lives across the setjmp;
// the pixels go into the caller's vector.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64];
  int64_t max_scans;
};
[[noreturn]] void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}
void jpeg_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  switch (c->err->msg_code) {
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_JFIF_MAJOR:
    case JWRN_ADOBE_XFORM:
    case JWRN_BOGUS_ICC: return;
    default: jpeg_fail(c);  // the data is corrupt
  }
}
// A progressive file can hold thousands of tiny scans, each a pass over every block of the image:
// CPU time of scans x pixels from a few kilobytes. The limit stops that (io::LoadLimits).
void jpeg_progress(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  const auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (d->input_scan_number > e->max_scans) {
    std::snprintf(e->message, sizeof e->message, "more than %lld progressive scans (io::LoadLimits::max_jpeg_scans)",
                  static_cast<long long>(e->max_scans));
    std::longjmp(e->jump, 1);
  }
}

// The most memory one decode of a w x h image may take, stb's or libjpeg's: the image padded to
// JPEG's 16-pixel blocks at 16 bytes a pixel (16-bit RGBA PNG rows with their filter bytes; a
// progressive JPEG's coefficients, 2 bytes each for every component at full resolution) plus 1 MiB
// of row buffers and tables. Both decoders fail, not allocate, past it.
int64_t decode_memory_cap(int w, int h) { return 16 * (int64_t(w) + 16) * (int64_t(h) + 16) + (int64_t(1) << 20); }

// Adobe's CMYK as stored (inverted: 255 is no ink), 4 bytes a pixel in px, to RGB (as stb does:
// R = C * K / 255) or to its luma (stb's weights), in place.
void cmyk_to(std::vector<uint8_t>& px, int out_channels) {
  const size_t n = px.size() / 4;
  auto mul = [](unsigned a, unsigned b) { const unsigned t = a * b + 128; return uint8_t((t + (t >> 8)) >> 8); };
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* s = &px[4 * i];
    const uint8_t r = mul(s[0], s[3]), g = mul(s[1], s[3]), b = mul(s[2], s[3]);
    if (out_channels == 1) {
      px[i] = uint8_t((r * 77 + g * 150 + b * 29) >> 8);
    } else {
      px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    }
  }
  px.resize(n * size_t(out_channels));
}

// Decodes into px (H, W, C) uint8; returns false with the reason in why. channels as load_image's.
bool decode_jpeg(const std::vector<uint8_t>& b, int channels, const LoadLimits& lim, std::vector<uint8_t>& px, int& w,
                 int& h, int& c, char (&why)[JMSG_LENGTH_MAX + 64]) {
  jpeg_decompress_struct d;
  std::memset(&d, 0, sizeof d);  // so that jpeg_destroy_decompress is safe even if creating it fails
  JpegError err;
  jpeg_progress_mgr progress;
  d.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_message;
  err.max_scans = lim.max_jpeg_scans;
  err.message[0] = 0;
  if (setjmp(err.jump)) {
    std::memcpy(why, err.message, sizeof why);
    jpeg_destroy_decompress(&d);
    return false;
  }
  jpeg_create_decompress(&d);
  progress.progress_monitor = jpeg_progress;
  d.progress = &progress;
  jpeg_mem_src(&d, b.data(), static_cast<unsigned long>(b.size()));
  jpeg_read_header(&d, TRUE);
  w = int(d.image_width), h = int(d.image_height);
  if (int64_t(w) * h > lim.max_image_pixels) {
    std::snprintf(why, sizeof why, "declares %dx%d pixels, more than the limit of %lld (io::LoadLimits::max_image_pixels)", w,
                  h, static_cast<long long>(lim.max_image_pixels));
    jpeg_destroy_decompress(&d);
    return false;
  }
  const bool gray = channels == 1 || (channels == 0 && d.num_components == 1);
  const bool cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;  // libjpeg gives no RGB of these
  d.out_color_space = cmyk ? JCS_CMYK : gray ? JCS_GRAYSCALE : JCS_RGB;
  d.mem->max_memory_to_use = long(decode_memory_cap(w, h));
  jpeg_start_decompress(&d);
  c = d.output_components;
  try {
    px.resize(size_t(w) * size_t(h) * size_t(c));
  } catch (...) {
    jpeg_destroy_decompress(&d);
    throw;
  }
  while (d.output_scanline < d.output_height) {
    JSAMPROW row = px.data() + size_t(d.output_scanline) * size_t(w) * size_t(c);
    jpeg_read_scanlines(&d, &row, 1);
  }
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
  if (cmyk) cmyk_to(px, gray ? 1 : 3), c = gray ? 1 : 3;
  return true;
}

// stb_image copies a PNG's first IDAT chunk into a buffer it allocates only for data: a first IDAT
// of length 0 has it memcpy 0 bytes to a null pointer (undefined behaviour; found by fuzz_image).
// Empty IDAT chunks carry nothing, so they are dropped before stb sees the file. The walk follows
// the chunk structure as stb does (length, type, data, CRC); a chunk that declares more data than
// the file has left is an error here (stb would allocate what it declares first).
void prepare_png(std::vector<uint8_t>& b, const std::string& path) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (b.size() < 8 || !std::equal(sig, sig + 8, b.begin())) return;
  size_t i = 8;
  while (i + 12 <= b.size()) {
    const uint64_t len = uint64_t(b[i]) << 24 | uint64_t(b[i + 1]) << 16 | uint64_t(b[i + 2]) << 8 | b[i + 3];
    if (len == 0 && std::equal(b.begin() + long(i) + 4, b.begin() + long(i) + 8, "IDAT")) {
      b.erase(b.begin() + long(i), b.begin() + long(i) + 12);
      continue;
    }
    MG_CHECK(len <= b.size() - i - 12, "load_image: ", path, " is a corrupt PNG (chunk ",
             std::string(b.begin() + long(i) + 4, b.begin() + long(i) + 8), " declares ", len, " bytes, the file has ",
             b.size() - i - 12, " after it)");
    i += 12 + size_t(len);
  }
}

}  // namespace

Tensor load_image(const std::string& path, int channels) {
  MG_CHECK(channels == 0 || channels == 1 || channels == 3, "load_image: channels must be 0, 1 or 3, got ", channels);
  MG_CHECK(std::filesystem::exists(path), "load_image: file ", path, " does not exist");
  const auto size = std::filesystem::file_size(path);
  MG_CHECK(size < (uint64_t(1) << 31), "load_image: ", path, " is ", size, " bytes, more than an image file may be");
  std::vector<uint8_t> b(size);
  {
    std::ifstream f(path, std::ios::binary);
    f.read(reinterpret_cast<char*>(b.data()), std::streamsize(size));
    MG_CHECK(f.good() || size == 0, "load_image: cannot read ", path);
  }
  int w = 0, h = 0, c = 0;
  const int C = channels;
  auto to_tensor = [&](const unsigned char* s) {
    const int Co = C ? C : c;
    Tensor t = empty({Co, h, w});
    float* dst = t.data_ptr<float>();
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < Co; ++k) dst[(int64_t(k) * h + y) * w + x] = float(s[(int64_t(y) * w + x) * Co + k]) / 255.0f;
    return t;
  };
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    std::vector<uint8_t> px;
    char why[JMSG_LENGTH_MAX + 64];
    MG_CHECK(decode_jpeg(b, channels, load_limits(), px, w, h, c, why), "load_image: ", path,
             " is not a JPEG minigrad can read (", why, ")");
    return to_tensor(px.data());
  }
  prepare_png(b, path);
  const int len = int(b.size());
  MG_CHECK(stbi_info_from_memory(b.data(), len, &w, &h, &c), "load_image: cannot decode ", path, " (",
           stbi_failure_reason(), "; minigrad reads PNG, JPEG and BMP)");
  const int64_t pixels = int64_t(w) * int64_t(h), cap = load_limits().max_image_pixels;
  MG_CHECK(w > 0 && h > 0 && pixels <= cap, "load_image: ", path, " declares ", w, "x", h, " pixels, more than the limit of ",
           cap, " (io::LoadLimits::max_image_pixels)");
  // No buffer stb needs is larger than the decode cap plus twice the file (a PNG's gathered IDAT data).
  struct CapGuard {
    explicit CapGuard(size_t cap) { stb_alloc_cap = cap, stb_cap_refused = false; }
    ~CapGuard() { stb_alloc_cap = 0; }
  } cap_guard(size_t(decode_memory_cap(w, h) + 2 * int64_t(len)));
  std::unique_ptr<unsigned char, void (*)(void*)> px(stbi_load_from_memory(b.data(), len, &w, &h, &c, channels),
                                                     stbi_image_free);
  MG_CHECK(px || !stb_cap_refused, "load_image: ", path, " needs a larger buffer than a ", w, "x", h,
           " image can (a deflate stream that inflates past the image, or a corrupt file)");
  MG_CHECK(px, "load_image: cannot decode ", path, " (", stbi_failure_reason(), ")");
  MG_CHECK(int64_t(w) * h <= cap, "load_image: ", path, " decodes to ", w, "x", h, " pixels, more than its header said");
  return to_tensor(px.get());
}

void save_png(const std::string& path, const Tensor& image) {
  MG_CHECK(image.dim() == 2 || image.dim() == 3, "save_png: expected (C, H, W) or (H, W), got ", image.sizes());
  Tensor t = (image.dim() == 2 ? image.unsqueeze(0) : image).detach().to(Device::cpu()).to(kFloat32).contiguous();
  const int64_t C = t.size(0), H = t.size(1), W = t.size(2);
  MG_CHECK(C == 1 || C == 3 || C == 4, "save_png: expected 1, 3 or 4 channels, got ", C);
  MG_CHECK(H > 0 && W > 0 && H * W <= (int64_t(1) << 28), "save_png: cannot write a ", H, "x", W, " image");
  std::vector<unsigned char> px(size_t(C * H * W));
  const float* s = t.data_ptr<float>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t k = 0; k < C; ++k)
        px[size_t((y * W + x) * C + k)] = static_cast<unsigned char>(std::clamp(s[(k * H + y) * W + x], 0.0f, 1.0f) * 255.0f + 0.5f);
  MG_CHECK(stbi_write_png(path.c_str(), int(W), int(H), int(C), px.data(), int(W * C)), "save_png: cannot write ", path);
}

}  // namespace minigrad::io
