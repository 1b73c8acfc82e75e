// Images through Debian's stb (stb_image to read, stb_image_write to write PNG). Only the formats
// minigrad documents are compiled in (PNG, JPEG, BMP): the others' decoders are not reachable from a
// file, and each file's header is checked before stb decodes it. Every allocation stb makes goes
// through a cap set per file from its declared size (stb_alloc_cap): a PNG whose IDAT declares more
// bytes than the file has, or whose deflate stream inflates past the image, makes stb fail
// ("outofmem") instead of allocating what the file asks for.
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
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 20)
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "dataset.h"

namespace minigrad::io {

namespace {

// stb_image 2.27 (Debian's) builds a JPEG Huffman table from 16 code counts without checking that
// they add up to at most 256 symbols, and writes past its 257-entry table when they do. Every DHT
// segment of the file is checked here first, in the markers before and between the scans.
void check_jpeg_tables(const std::vector<uint8_t>& b, const std::string& path) {
  auto bad = [&](const char* why) { MG_FAIL("load_image: ", path, " is a corrupt JPEG (", why, ")"); };
  size_t i = 2;  // after SOI
  while (i + 1 < b.size()) {
    if (b[i] != 0xFF) {  // entropy-coded data: skip to the next marker
      ++i;
      continue;
    }
    const uint8_t m = b[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x00 || (m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0xD8) {  // stuffed byte, RSTn, TEM, SOI
      i += 2;
      continue;
    }
    if (m == 0xD9) return;  // EOI
    if (i + 4 > b.size()) return;  // stb reports the truncation itself
    const size_t len = size_t(b[i + 2]) << 8 | b[i + 3];
    if (len < 2) bad("a segment shorter than its length field");
    if (m == 0xC4) {
      // Read the tables as stb does: while the declared length lasts, each table's 16 counts and
      // values in turn, past the segment's end and with zeros past the file's end. A table cut
      // short still has its counts added (the bytes after it, a marker or the EOI, count too).
      auto at = [&](size_t p) -> size_t { return p < b.size() ? b[p] : 0; };
      long left = long(len) - 2;
      size_t j = i + 4;
      while (left > 0) {
        const size_t q = at(j);
        if ((q >> 4) > 1 || (q & 15) > 3) return;  // stb rejects the table before building it
        size_t n = 0;
        for (size_t k = 1; k <= 16; ++k) n += at(j + k);
        if (n > 256) bad("a Huffman table with more than 256 codes");
        left -= long(17 + n);
        j += 17 + n;
      }
      if (left != 0) return;  // stb stops here: the lengths disagree
    }
    i += 2 + len;
  }
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
  prepare_png(b, path);
  const int len = int(b.size());
  if (b.size() >= 2 && b[0] == 0xFF && b[1] == 0xD8) check_jpeg_tables(b, path);  // stbi_info reads DHTs too
  int w = 0, h = 0, c = 0;
  MG_CHECK(stbi_info_from_memory(b.data(), len, &w, &h, &c), "load_image: cannot decode ", path, " (",
           stbi_failure_reason(), "; minigrad reads PNG, JPEG and BMP)");
  const int64_t pixels = int64_t(w) * int64_t(h), cap = load_limits().max_image_pixels;
  MG_CHECK(w > 0 && h > 0 && pixels <= cap, "load_image: ", path, " declares ", w, "x", h, " pixels, more than the limit of ",
           cap, " (io::LoadLimits::max_image_pixels)");
  // No buffer stb needs is larger than the image, padded to JPEG's 16-pixel blocks, at 16 bytes a
  // pixel (16-bit RGBA PNG rows with their filter bytes, JPEG planes), or than twice the file (a
  // PNG's gathered IDAT data).
  struct CapGuard {
    explicit CapGuard(size_t cap) { stb_alloc_cap = cap, stb_cap_refused = false; }
    ~CapGuard() { stb_alloc_cap = 0; }
  } cap_guard(size_t(16 * (int64_t(w) + 16) * (int64_t(h) + 16) + 2 * int64_t(len)) + (size_t(1) << 20));
  std::unique_ptr<unsigned char, void (*)(void*)> px(stbi_load_from_memory(b.data(), len, &w, &h, &c, channels),
                                                     stbi_image_free);
  MG_CHECK(px || !stb_cap_refused, "load_image: ", path, " needs a larger buffer than a ", w, "x", h,
           " image can (a deflate stream that inflates past the image, or a corrupt file)");
  MG_CHECK(px, "load_image: cannot decode ", path, " (", stbi_failure_reason(), ")");
  MG_CHECK(int64_t(w) * h <= cap, "load_image: ", path, " decodes to ", w, "x", h, " pixels, more than its header said");
  const int C = channels ? channels : c;
  Tensor t = empty({C, h, w});
  float* d = t.data_ptr<float>();
  const unsigned char* s = px.get();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < C; ++k) d[(int64_t(k) * h + y) * w + x] = float(s[(int64_t(y) * w + x) * C + k]) / 255.0f;
  return t;
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
