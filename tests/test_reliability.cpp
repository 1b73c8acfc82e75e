// Bad files, overflowing shapes and NaN: clear errors before any large allocation, never a crash or
// silently wrong numbers; checkpoints survive kill -9 during a save.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "helpers.h"
#include "jpeg_encode.h"

using namespace mgtest;
namespace fs = std::filesystem;

namespace {

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}
std::string le(uint64_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s += char((v >> (8 * i)) & 0xff);
  return s;
}
void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}
// A safetensors file from a header and a data section.
std::string safetensors_bytes(std::string header, const std::string& data) {
  while (header.size() % 8) header += ' ';
  return le(header.size(), 8) + header + data;
}
// The limits restored when a test that changes them ends.
struct LimitsGuard {
  io::LoadLimits saved = io::load_limits();
  ~LimitsGuard() { io::set_load_limits(saved); }
};
bool same_or_both_nan(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

}  // namespace

TEST_CASE("shapes: element counts and strides that overflow 64 bits are errors naming the shape") {
  CHECK_ERROR(zeros({int64_t(1) << 40, int64_t(1) << 40}), "[1099511627776, 1099511627776]", "2^63");
  CHECK_ERROR(ones({3, int64_t(1) << 62}), "[3, 4611686018427387904]");
  CHECK_ERROR(empty({int64_t(1) << 58, 4}, kFloat64), "empty", "2^62 bytes");
  CHECK_ERROR(zeros({2, -3}), "negative");
  CHECK(zeros({int64_t(1) << 40, 0}).numel() == 0);  // empty, and its strides fit
  Tensor t = zeros({4, 6});
  CHECK_ERROR(t.view({int64_t(1) << 62, 8, -1}), "view", "2^63");
  CHECK_ERROR(t.expand({int64_t(1) << 40, int64_t(1) << 40, 4, 6}).numel(), "2^63");
  CHECK(t.view({2, -1}).sizes() == Shape{2, 12});
}

TEST_CASE("read_idx: a header that overflows or outgrows its file fails before the data is allocated") {
  TempDir d;
  LimitsGuard lg;
  const std::string hdr4 = std::string("\0\0\x08\x04", 4) + be32(65536) + be32(65536) + be32(65536) + be32(65536);
  write_bytes(d / "huge", hdr4 + "x");  // 21 bytes, dims 65536^4
  reset_peak_memory_stats();
  const int64_t before = memory_stats().current_bytes;
  CHECK_ERROR(io::read_idx(d / "huge"), "read_idx", "huge", "[65536, 65536, 65536, 65536]");
  write_gz(d / "huge.gz", hdr4 + "x");
  CHECK_ERROR(io::read_idx(d / "huge.gz"), "read_idx", "more than 2^64");
  CHECK(memory_stats().peak_bytes - before < (int64_t(1) << 20));
  // gzip: the declared size against the decompression limit, and a stream that holds less (or more)
  // than its header says allocates only what it holds.
  io::set_load_limits({.max_decompressed_bytes = 1 << 20, .max_image_pixels = 1 << 20});
  const std::string hdr3 = std::string("\0\0\x08\x03", 4) + be32(200) + be32(100) + be32(100);  // 2 MB declared
  write_gz(d / "big.gz", hdr3 + std::string(2000000, '\0'));
  CHECK_ERROR(io::read_idx(d / "big.gz"), "read_idx", "decompression limit", "1048576", "[200, 100, 100]");
  io::set_load_limits(lg.saved);
  const std::string hdr1 = std::string("\0\0\x08\x01", 4) + be32(100000000);  // 100 MB declared, 10 held
  write_gz(d / "short.gz", hdr1 + std::string(10, '\x01'));
  reset_peak_memory_stats();
  CHECK_ERROR(io::read_idx(d / "short.gz"), "read_idx", "truncated", "[100000000]");
  CHECK(memory_stats().peak_bytes - memory_stats().current_bytes < (int64_t(1) << 20));
  const std::string hdr_small = std::string("\0\0\x08\x01", 4) + be32(10);
  write_gz(d / "long.gz", hdr_small + std::string(3000000, '\0'));  // a bomb behind a small header
  CHECK_ERROR(io::read_idx(d / "long.gz"), "read_idx", "corrupt", "more than 11");
  write_gz(d / "ok.gz", hdr_small + std::string(10, '\x07'));
  Tensor ok = io::read_idx(d / "ok.gz");
  CHECK(ok.sizes() == Shape{10});
  CHECK(ok.data_ptr<uint8_t>()[9] == 7);
  CHECK_ERROR(io::set_load_limits({.max_decompressed_bytes = 0}), "set_load_limits");
}

TEST_CASE("load_cifar10: a gzip batch that inflates past the limit is refused while it inflates") {
  TempDir d;
  LimitsGuard lg;
  io::set_load_limits({.max_decompressed_bytes = 1 << 20, .max_image_pixels = 1 << 20});
  write_gz(d / "test_batch.bin", std::string(3073 * 1000, '\0'));  // 3 MB of records
  reset_peak_memory_stats();
  CHECK_ERROR(io::load_cifar10(d.path.string(), false), "load_cifar10", "inflates to more than 1048576");
  std::string rec(3073, '\0');
  rec[0] = char(10);
  write_bytes(d / "test_batch.bin", rec);
  CHECK_ERROR(io::load_cifar10(d.path.string(), false), "load_cifar10", "label 10", "test_batch.bin");
}

TEST_CASE("load_image: formats other than PNG, JPEG and BMP, huge headers and bad JPEG tables are errors") {
  TempDir d;
  LimitsGuard lg;
  write_bytes(d / "a.ppm", "P6\n2 2\n255\n\x01\x02\x03");  // stb's PPM reader is not compiled in
  CHECK_ERROR(io::load_image(d / "a.ppm"), "load_image", "a.ppm", "PNG, JPEG and BMP");
  // A 38-byte TGA header for 65535 x 65535 pixels: not a format minigrad reads.
  std::string tga(18, '\0');
  tga[2] = 2, tga[12] = tga[13] = tga[14] = tga[15] = char(0xff), tga[16] = 24;
  write_bytes(d / "a.tga", tga + std::string(20, '\0'));
  CHECK_ERROR(io::load_image(d / "a.tga"), "load_image", "cannot decode");
  // A BMP header declaring 60000 x 60000 pixels, refused from the header.
  std::string bmp = "BM" + le(70, 4) + le(0, 4) + le(54, 4) + le(40, 4) + le(60000, 4) + le(60000, 4) + le(1, 2) +
                    le(24, 2) + le(0, 4) + le(16, 4) + std::string(16, '\0');
  write_bytes(d / "big.bmp", bmp + std::string(16, '\0'));
  reset_peak_memory_stats();
  const int64_t before = memory_stats().current_bytes;
  CHECK_ERROR(io::load_image(d / "big.bmp"), "load_image", "60000x60000", "max_image_pixels");
  CHECK(memory_stats().peak_bytes - before < (int64_t(1) << 20));
  // The same file under a raised limit reaches the decoder, which finds it truncated.
  io::set_load_limits({.max_decompressed_bytes = int64_t(1) << 32, .max_image_pixels = int64_t(1) << 32});
  CHECK_ERROR(io::load_image(d / "big.bmp"), "load_image", "cannot decode");
  io::set_load_limits(lg.saved);
  // A JPEG whose Huffman table declares 272 codes (stb 2.27 wrote past its table on these; libjpeg
  // refuses them).
  std::string jpg = "\xff\xd8\xff\xc4";
  std::string dht(1, '\0');
  for (int i = 0; i < 16; ++i) dht += char(17);
  dht += std::string(272, '\0');
  jpg += char((dht.size() + 2) >> 8);
  jpg += char((dht.size() + 2) & 0xff);
  jpg += dht + "\xff\xd9";
  write_bytes(d / "bad.jpg", jpg);
  CHECK_ERROR(io::load_image(d / "bad.jpg"), "load_image", "bad.jpg", "not a JPEG minigrad can read", "Huffman table");
  // A DHT segment that declares more bytes than the file has: its second table is cut by the EOI,
  // whose two bytes stb read as code counts (255 + 217) and zeros after (found by fuzz_image).
  std::string cut = "\xff\xd8\xff\xc4";
  cut += char(0), cut += char(0x40);
  cut += char(0), cut += char(1), cut += std::string(15, '\0'), cut += char(7);  // one code of length 1
  cut += char(0);  // the second table's class and id, then the EOI
  cut += "\xff\xd9";
  write_bytes(d / "cut.jpg", cut);
  CHECK_ERROR(io::load_image(d / "cut.jpg"), "load_image", "cut.jpg", "not a JPEG minigrad can read");
  // A real image still loads.
  Tensor img = rand({3, 4, 5});
  io::save_png(d / "ok.png", img);
  Tensor ok = io::load_image(d / "ok.png");
  CHECK(ok.sizes() == Shape{3, 4, 5});
  // An empty IDAT chunk before the data (legal; stb would memcpy 0 bytes to a null pointer, found by
  // fuzz_image under UBSan) loads as the same image.
  std::string png = read_bytes(d / "ok.png");
  const size_t idat = png.find("IDAT");
  REQUIRE(idat != std::string::npos);
  png.insert(idat - 4, std::string("\0\0\0\0IDAT\xae\x42\x60\x82", 12));
  write_bytes(d / "empty_idat.png", png);
  CHECK(vals(io::load_image(d / "empty_idat.png")) == vals(ok));
  // A 103-byte PNG whose IDAT declares 168 MB (stb reallocs what it declares before reading it;
  // found by fuzz_image), and a 1x1 PNG whose deflate stream inflates to 32 MiB: errors, and stb
  // never gets more than the image needs.
  std::string png1 = "\x89PNG\r\n\x1a\n" + std::string("\0\0\0\x0dIHDR", 8) + std::string("\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0", 13) +
                     std::string(4, '\0');
  write_bytes(d / "long_idat.png", png1 + std::string("\x0a\x00\xb1\x2dIDAT", 8) + std::string(40, 'x'));
  CHECK_ERROR(io::load_image(d / "long_idat.png"), "load_image", "long_idat.png", "chunk IDAT declares 167817517 bytes");
  const std::string zeros(size_t(32) << 20, '\0');
  std::string z(compressBound(uLong(zeros.size())), '\0');
  uLongf zlen = uLongf(z.size());
  REQUIRE(compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(zeros.data()), uLong(zeros.size()), 9) == Z_OK);
  z.resize(zlen);
  auto be32 = [](size_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  write_bytes(d / "bomb.png", png1 + be32(z.size()) + "IDAT" + z + std::string(4, '\0') + std::string("\0\0\0\0IEND", 8) +
                                  std::string(4, '\0'));
  CHECK_ERROR(io::load_image(d / "bomb.png"), "load_image", "bomb.png", "larger buffer than a 1x1 image");
}

TEST_CASE("load_image: JPEG through libjpeg (baseline, progressive, gray), corrupt and oversized files refused") {
  TempDir d;
  LimitsGuard lg;
  const int W = 24, H = 16;
  std::vector<uint8_t> rgb(size_t(W * H * 3)), gray(size_t(W * H));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {  // smooth, so a quality-95 JPEG is within a few levels of it
      const size_t i = size_t(y * W + x);
      rgb[3 * i] = uint8_t(40 + 6 * x), rgb[3 * i + 1] = uint8_t(200 - 8 * y), rgb[3 * i + 2] = uint8_t(90 + 2 * (x + y));
      gray[i] = uint8_t(30 + 5 * x + 4 * y);
    }
  auto max_err = [](const Tensor& t, const std::vector<uint8_t>& px, int C) {  // (C, H, W) against (H, W, C)
    const auto v = vals(t);
    double e = 0;
    for (int k = 0; k < C; ++k)
      for (int i = 0; i < W * H; ++i) e = std::max(e, std::abs(v[size_t(k * W * H + i)] * 255.0 - px[size_t(i * C + k)]));
    return e;
  };
  for (bool progressive : {false, true}) {
    CAPTURE(progressive);
    write_bytes(d / "rgb.jpg", encode_jpeg(rgb, W, H, 3, progressive));
    write_bytes(d / "gray.jpg", encode_jpeg(gray, W, H, 1, progressive));
    const Tensor c = io::load_image(d / "rgb.jpg");
    REQUIRE(c.sizes() == Shape{3, H, W});
    CHECK(max_err(c, rgb, 3) <= 8);
    const Tensor g = io::load_image(d / "gray.jpg");
    REQUIRE(g.sizes() == Shape{1, H, W});
    CHECK(max_err(g, gray, 1) <= 4);
    const Tensor g3 = io::load_image(d / "gray.jpg", 3);  // gray to RGB: three equal planes
    REQUIRE(g3.sizes() == Shape{3, H, W});
    CHECK(vals(g3.select(0, 0)) == vals(g.select(0, 0)));
    CHECK(vals(g3.select(0, 2)) == vals(g.select(0, 0)));
    CHECK(io::load_image(d / "rgb.jpg", 1).sizes() == Shape{1, H, W});
  }
  // CMYK and YCCK (Adobe's inverted CMYK, as stb read it): R = C * K / 255 of the stored values;
  // gray is stb's luma of that.
  std::vector<uint8_t> cmyk(size_t(W * H * 4));
  for (int i = 0; i < W * H; ++i)
    for (int k = 0; k < 3; ++k) cmyk[size_t(4 * i + k)] = rgb[size_t(3 * i + k)];
  for (int i = 0; i < W * H; ++i) cmyk[size_t(4 * i + 3)] = 255;  // no black: the RGB image
  for (bool ycck : {false, true}) {
    CAPTURE(ycck);
    write_bytes(d / "cmyk.jpg", encode_jpeg(cmyk, W, H, 4, false, 95, ycck));
    const Tensor c = io::load_image(d / "cmyk.jpg");
    REQUIRE(c.sizes() == Shape{3, H, W});
    CHECK(max_err(c, rgb, 3) <= 8);
    const Tensor g = io::load_image(d / "cmyk.jpg", 1);
    REQUIRE(g.sizes() == Shape{1, H, W});
    std::vector<uint8_t> luma(size_t(W * H));
    for (int i = 0; i < W * H; ++i)
      luma[size_t(i)] = uint8_t((rgb[size_t(3 * i)] * 77 + rgb[size_t(3 * i + 1)] * 150 + rgb[size_t(3 * i + 2)] * 29) >> 8);
    CHECK(max_err(g, luma, 1) <= 8);
  }
  for (int i = 0; i < W * H; ++i) cmyk[size_t(4 * i + 3)] = 128;  // half black: half the RGB values
  for (int i = 0; i < W * H; ++i)
    for (int k = 0; k < 3; ++k) rgb[size_t(3 * i + k)] = uint8_t((rgb[size_t(3 * i + k)] * 128 + 127) / 255);
  write_bytes(d / "cmyk.jpg", encode_jpeg(cmyk, W, H, 4, true, 95));
  CHECK(max_err(io::load_image(d / "cmyk.jpg"), rgb, 3) <= 8);
  // Junk bytes between two markers (libjpeg warns "extraneous bytes"; the pixels are unharmed): loads,
  // equal to the clean file.
  const std::string clean = encode_jpeg(gray, W, H, 1, false);
  const size_t dqt = clean.find("\xff\xdb");
  REQUIRE(dqt != std::string::npos);
  write_bytes(d / "clean.jpg", clean);
  write_bytes(d / "junk.jpg", clean.substr(0, dqt) + "junk" + clean.substr(dqt));
  CHECK(vals(io::load_image(d / "junk.jpg")) == vals(io::load_image(d / "clean.jpg")));
  // The scan limit: libjpeg's simple progression writes 10 scans for YCbCr.
  io::set_load_limits({.max_jpeg_scans = 4});
  CHECK_ERROR(io::load_image(d / "rgb.jpg"), "load_image", "rgb.jpg", "more than 4 progressive scans", "max_jpeg_scans");
  io::set_load_limits({.max_jpeg_scans = 10});
  CHECK(io::load_image(d / "rgb.jpg").sizes() == Shape{3, H, W});
  CHECK_ERROR(io::set_load_limits({.max_jpeg_scans = 0}), "set_load_limits", "0 JPEG scans");
  io::set_load_limits(lg.saved);
  // The pixel limit, from the header.
  io::set_load_limits({.max_image_pixels = W * H - 1});
  CHECK_ERROR(io::load_image(d / "gray.jpg"), "load_image", "gray.jpg", "24x16", "max_image_pixels");
  io::set_load_limits(lg.saved);
  // A header declaring 60000 x 60000 pixels over a few bytes of data: refused before any allocation.
  std::string big = encode_jpeg(gray, W, H, 1, false);
  const size_t sof = big.find("\xff\xc0");
  REQUIRE(sof != std::string::npos);
  big[sof + 5] = char(60000 >> 8), big[sof + 6] = char(60000 & 0xff), big[sof + 7] = char(60000 >> 8), big[sof + 8] = char(60000 & 0xff);
  write_bytes(d / "big.jpg", big);
  reset_peak_memory_stats();
  const int64_t before = memory_stats().current_bytes;
  CHECK_ERROR(io::load_image(d / "big.jpg"), "load_image", "big.jpg", "60000x60000", "max_image_pixels");
  CHECK(memory_stats().peak_bytes - before < (int64_t(1) << 20));
  // Corrupt data that libjpeg would decode with a warning (gray blocks) is an error: a file cut in
  // half, and one whose entropy-coded data is overwritten.
  const std::string whole = encode_jpeg(rgb, W, H, 3, false);
  write_bytes(d / "half.jpg", whole.substr(0, whole.size() / 2));
  CHECK_ERROR(io::load_image(d / "half.jpg"), "load_image", "half.jpg", "not a JPEG minigrad can read");
  std::string garbled = whole;
  const size_t sos = garbled.find("\xff\xda");
  REQUIRE(sos != std::string::npos);
  for (size_t i = sos + 20; i + 2 < garbled.size(); i += 3) garbled[i] = char(0xff);
  write_bytes(d / "garbled.jpg", garbled);
  CHECK_ERROR(io::load_image(d / "garbled.jpg"), "load_image", "garbled.jpg", "not a JPEG minigrad can read");
}

TEST_CASE("load_safetensors: the header is checked whole before any tensor is allocated") {
  TempDir d;
  const std::string data(2 << 20, '\0');  // 2 MiB
  // 1,000 entries over the same 2 MiB: refused at the overlap check, before allocating 2 GB.
  std::string h = "{";
  for (int i = 0; i < 1000; ++i)
    h += std::string(i ? "," : "") + "\"t" + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[2097152],\"data_offsets\":[0,2097152]}";
  h += "}";
  write_bytes(d / "overlap", safetensors_bytes(h, data));
  reset_peak_memory_stats();
  const int64_t before = memory_stats().current_bytes;
  CHECK_ERROR(io::load_safetensors(d / "overlap"), "load_safetensors", "overlaps");
  CHECK(memory_stats().peak_bytes - before < (int64_t(1) << 20));
  // A shape whose byte count overflows.
  write_bytes(d / "shape", safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", ""));
  CHECK_ERROR(io::load_safetensors(d / "shape"), "load_safetensors", "[4294967296, 4294967296]", "more than 2^64");
  // The same name twice.
  write_bytes(d / "dup", safetensors_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", "xy"));
  CHECK_ERROR(io::load_safetensors(d / "dup"), "load_safetensors", "\"a\" appears twice");
  // The data's checksum: a flipped byte in a saved file is found.
  io::save_safetensors(d / "ok", {{"w", arange(0, 1000, 1, kFloat32)}});
  std::string raw = read_bytes(d / "ok");
  CHECK(io::load_safetensors(d / "ok").metadata.count("minigrad.crc32") == 1);
  raw[raw.size() - 5] ^= 0x10;
  write_bytes(d / "flipped", raw);
  CHECK_ERROR(io::load_safetensors(d / "flipped"), "load_safetensors", "CRC-32");
}

namespace {
std::shared_ptr<nn::Sequential> small_net() {
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Conv2d>(1, 2, 3), std::make_shared<nn::BatchNorm2d>(2),
                                          std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 3));
}
}  // namespace

TEST_CASE("load_checkpoint: strict by default; bad optimizer state and metadata are errors naming the key") {
  TempDir d;
  manual_seed(5);
  auto net = small_net();
  optim::Adam opt(net->parameters(), {.lr = 0.01});
  io::save_checkpoint(d / "ck", *net, &opt, 2);
  auto file = io::load_safetensors(d / "ck");
  auto resave = [&](const std::string& name, io::NamedTensors ts, std::map<std::string, std::string> meta) {
    io::save_safetensors(d / name, ts, meta);
    return d / name;
  };
  // An extra tensor: strict refuses it, strict = false skips it.
  io::NamedTensors extra = file.tensors;
  extra.emplace_back("head.bias", zeros({3}));
  const std::string pe = resave("extra", extra, file.metadata);
  auto net2 = small_net();
  CHECK_ERROR(io::load_checkpoint(pe, *net2, nullptr), "load_checkpoint", "\"head.bias\"", "strict");
  CHECK(io::load_checkpoint(pe, *net2, nullptr, nullptr, {.strict = false}) == 2);
  // A missing tensor likewise.
  io::NamedTensors missing(file.tensors.begin() + 1, file.tensors.end());
  const std::string pm = resave("missing", missing, file.metadata);
  CHECK_ERROR(io::load_checkpoint(pm, *net2, &opt), "load_checkpoint", file.tensors[0].first.c_str());
  CHECK(io::load_checkpoint(pm, *net2, &opt, nullptr, {.strict = false}) == 2);
  // Metadata: a non-numeric epoch.
  auto meta = file.metadata;
  meta["epoch"] = "abc";
  CHECK_ERROR(io::load_checkpoint(resave("epoch", file.tensors, meta), *net2, nullptr), "load_checkpoint",
              "\"epoch\"", "abc");
  // Optimizer state out of range: each is an error naming its key, and nothing is changed.
  auto with = [&](const std::string& key, Tensor v) {
    io::NamedTensors ts = file.tensors;
    for (auto& [n, t] : ts)
      if (n == key) t = v;
    return resave("opt", ts, file.metadata);
  };
  optim::Adam opt2(net2->parameters(), {.lr = 0.5});
  const Tensor w_before = net2->parameters()[0].detach().clone();
  CHECK_ERROR(io::load_checkpoint(with("optimizer.step", scalar_tensor(1e200, kFloat64)), *net2, &opt2), "Adam",
              "\"step\"", "2^53");
  CHECK_ERROR(io::load_checkpoint(with("optimizer.lr", scalar_tensor(INFINITY, kFloat64)), *net2, &opt2), "Adam",
              "\"lr\"", "inf");
  Tensor neg_v = full(opt.state_dict()[3].second.sizes(), -1.0);
  CHECK_ERROR(io::load_checkpoint(with("optimizer.exp_avg_sq.0", neg_v), *net2, &opt2), "Adam", "\"exp_avg_sq.0\"", ">= 0");
  Tensor nan_m = full(opt.state_dict()[2].second.sizes(), NAN);
  CHECK_ERROR(io::load_checkpoint(with("optimizer.exp_avg.0", nan_m), *net2, &opt2), "Adam", "\"exp_avg.0\"", "nan");
  CHECK(opt2.lr() == 0.5);
  CHECK(vals(net2->parameters()[0]) == vals(w_before));
  // An optimizer entry it does not have.
  io::NamedTensors unk = file.tensors;
  unk.emplace_back("optimizer.exp_avg.99", zeros({1}));
  CHECK_ERROR(io::load_checkpoint(resave("unk", unk, file.metadata), *net2, &opt2), "Adam", "\"exp_avg.99\"");
  // A floating buffer value is not cast into an integer one.
  CHECK(io::load_checkpoint(d / "ck", *net2, &opt2) == 2);
  CHECK(opt2.lr() == doctest::Approx(0.01));
  CHECK_ERROR(optim::SGD(net2->parameters(), {.lr = INFINITY}), "SGD", "finite");
}

TEST_CASE("save_safetensors: kill -9 at random moments leaves a complete earlier file; temps are cleaned") {
  TempDir d;
  const std::string path = d / "ck.safetensors";
  auto payload = [](int v) {  // 4 MB, every value v: a torn file would mix versions or fail its CRC
    return io::NamedTensors{{"a", full({1 << 19}, double(v), kFloat32)}, {"b", full({1 << 19}, double(v), kFloat32)}};
  };
  io::save_safetensors(path, payload(0), {{"v", "0"}});
  std::mt19937 rng(7);
  const int kills = 50;
  for (int i = 0; i < kills; ++i) {
    const std::vector<io::NamedTensors> versions{payload(1 + 2 * i), payload(2 + 2 * i)};
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the child saves two versions in a loop until it is killed
      try {
        for (int k = 0;; ++k) {
          const int v = 1 + 2 * i + (k & 1);
          io::save_safetensors(path, versions[size_t(k & 1)], {{"v", std::to_string(v)}});
        }
      } catch (...) {
        ::_exit(1);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 20000)(rng)));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    io::SafetensorsFile f = io::load_safetensors(path);  // complete, its CRC checked
    const int v = std::stoi(f.metadata.at("v"));
    CHECK(v >= 0);
    CHECK(v <= 2 + 2 * i);
    for (const auto& [n, t] : f.tensors) {
      CHECK(t.numel() == (1 << 19));
      CHECK(t.data_ptr<float>()[0] == float(v));
      CHECK(t.data_ptr<float>()[t.numel() - 1] == float(v));
    }
  }
  io::save_safetensors(path, payload(-1));  // the next successful save removes the dead writers' temps
  int temps = 0;
  for (const auto& e : fs::directory_iterator(d.path)) temps += e.path().filename().string() != "ck.safetensors";
  CHECK(temps == 0);
  CHECK(io::load_safetensors(path).tensors[0].second.data_ptr<float>()[0] == -1.0f);
}

namespace {
// A combine that gives NaN on finite inputs (log of a negative x), so it cannot declare
// no_nan_from_finite: its Max and Min keep the NaN checks.
struct LogPlus {
  template <class T>
  T operator()(T x, T w) const { return cf::log(x) + w; }
};
// combine::Add without no_nan_from_finite: its Max and Min run the NaN-checking kernels.
struct UncheckedAdd {
  template <class T>
  T operator()(T x, T w) const { return x + w; }
};
}  // namespace

TEST_CASE("NaN propagates as in PyTorch: relu, max reductions, max_pool2d and the open conv's Max / Min") {
  for_each_cpu_isa([] {
    for (DType dt : {kFloat32, kFloat64}) {
      CAPTURE(dt);
      std::vector<double> xv(37);
      for (size_t i = 0; i < xv.size(); ++i) xv[i] = double(i % 5) - 2.0;
      xv[3] = NAN, xv[17] = NAN, xv[36] = NAN;
      Tensor x = from_vector<double>(xv, {37}, dt).requires_grad_(true);
      Tensor y = relu(x);
      std::vector<double> yv = vals(y);
      for (size_t i = 0; i < xv.size(); ++i) CHECK(same_or_both_nan(yv[i], std::isnan(xv[i]) ? NAN : std::max(xv[i], 0.0)));
      sum(y).backward();  // the NaN's gradient is 0, as PyTorch's threshold_backward gives
      std::vector<double> g = vals(x.grad());
      for (size_t i = 0; i < xv.size(); ++i) CHECK(g[i] == (xv[i] > 0 ? 1.0 : 0.0));
      Tensor m = from_vector<double>({1, NAN, 3, 2}, {1, 1, 2, 2}, dt);
      CHECK(std::isnan(max_pool2d(m, {.kernel_size = 2}).item()));
      CHECK(std::isnan(std::get<0>(max(m.view({4}), 0)).item()));
    }
    // The open conv's Max / Min: an output whose window holds a NaN is NaN, as in max_pool2d, and
    // the gradient goes to that NaN's position.
    for (Reduce red : {Reduce::Max, Reduce::Min}) {
      Tensor x = randn({1, 2, 5, 5}, kFloat64);
      {
        NoGradGuard ng;
        x[0][1][2][3].fill_(NAN);
      }
      x.requires_grad_(true);
      Tensor w = randn({3, 2, 3, 3}, kFloat64);
      Tensor y = open_conv2d(x, w, {}, combine::Add{}, {.reduce = red});
      Tensor yv = y.detach();
      for (int64_t o = 0; o < 3; ++o)
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t j = 0; j < 3; ++j) {
            const bool covers = i <= 2 && i + 2 >= 2 && j <= 3 && j + 2 >= 3;
            CHECK(std::isnan(yv[0][o][i][j].item()) == covers);
          }
      sum(y).backward();
      std::vector<double> g = vals(x.grad());
      CHECK(g[size_t(25 + 2 * 5 + 3)] == 18.0);  // 6 windows x 3 channels, each won by the NaN
    }
    // A NaN made by the combine from finite inputs, over enough positions for the vector blocks.
    for (DType dt : {kFloat32, kFloat64})
      for (Reduce red : {Reduce::Max, Reduce::Min}) {
        CAPTURE(dt);
        Tensor x = add(rand({1, 2, 9, 40}, dt), 0.5);
        {
          NoGradGuard ng;
          x[0][1][4][20].fill_(-1.0);
        }
        Tensor w = randn({3, 2, 3, 3}, dt);
        Tensor y = open_conv2d(x, w, {}, LogPlus{}, {.reduce = red});
        REQUIRE(y.sizes() == Shape{1, 3, 7, 38});
        std::vector<double> yv = vals(y);
        int64_t wrong = 0;
        for (int64_t o = 0; o < 3; ++o)
          for (int64_t i = 0; i < 7; ++i)
            for (int64_t j = 0; j < 38; ++j) {
              const bool covers = i >= 2 && i <= 4 && j >= 18 && j <= 20;
              wrong += std::isnan(yv[size_t((o * 7 + i) * 38 + j)]) != covers;
            }
        CHECK(wrong == 0);
      }
    // On finite inputs the one-compare kernels (combine::Add declares no_nan_from_finite) give the
    // NaN-checking kernels' values and gradients, bit for bit.
    for (DType dt : {kFloat32, kFloat64})
      for (Reduce red : {Reduce::Max, Reduce::Min}) {
        CAPTURE(dt);
        Tensor x = randn({2, 3, 9, 40}, dt), w = randn({5, 3, 3, 3}, dt);
        Tensor y[2], gx[2], gw[2];
        for (int a = 0; a < 2; ++a) {
          Tensor xa = x.detach().requires_grad_(true), wa = w.detach().requires_grad_(true);
          y[a] = a ? open_conv2d(xa, wa, {}, combine::Add{}, {.padding = 1, .reduce = red})
                   : open_conv2d(xa, wa, {}, UncheckedAdd{}, {.padding = 1, .reduce = red});
          sum(mul(y[a], y[a].detach())).backward();
          gx[a] = xa.grad(), gw[a] = wa.grad();
        }
        CHECK(vals(y[0]) == vals(y[1]));
        CHECK(vals(gx[0]) == vals(gx[1]));
        CHECK(vals(gw[0]) == vals(gw[1]));
      }
  });
}

TEST_CASE("generators: threads sharing the default generator draw disjoint stretches of one stream") {
  constexpr int kCalls = 300, kThreads = 3;
  manual_seed(11);
  std::vector<std::vector<double>> got(kThreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        // dropout and a layer's initialiser draw from the same generator as randn
        if (t == 1) (void)dropout(ones({16}), 0.5, true);
        if (t == 2) (void)nn::Linear(4, 4).weight;
        for (double v : vals(randn({16}, kFloat64))) got[size_t(t)].push_back(v);
      }
    });
  for (auto& th : ts) th.join();
  // Each call drew from its own stretch of the stream: no state was read twice (a race on the
  // engine repeats or tears its state), so no value repeats.
  std::vector<double> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  CHECK(all.size() == size_t(kCalls * kThreads * 16));
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  // A copy of a generator continues its stream independently.
  Generator g(3);
  (void)rand({5}, {}, &g);
  Generator h = g;
  CHECK(vals(rand({4}, {}, &g)) == vals(rand({4}, {}, &h)));
}

TEST_CASE("autograd: grad mode and the tape are per thread") {
  Tensor a = ones({3}).requires_grad_(true);
  std::thread t([&] {
    NoGradGuard ng;
    Tensor y = mul(a, 2.0);
    CHECK_FALSE(y.requires_grad());
  });
  Tensor y = mul(a, 3.0);  // this thread still records while the other has grad mode off
  t.join();
  CHECK(y.requires_grad());
  std::vector<std::thread> ts;
  std::vector<Tensor> grads(4);
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&, i] {
      Tensor x = full({5}, double(i + 1)).requires_grad_(true);
      for (int k = 0; k < 50; ++k) sum(mul(x, x)).backward();
      grads[size_t(i)] = x.grad();
    });
  for (auto& th : ts) th.join();
  for (int i = 0; i < 4; ++i) CHECK(vals(grads[size_t(i)]) == std::vector<double>(5, 100.0 * (i + 1)));
}

TEST_CASE("anomaly detection: the first op with a non-finite output or gradient is named, with its inputs' shapes") {
  Tensor x = from_vector<double>({1, 0, 2}, {3}).requires_grad_(true);
  {
    autograd::DetectAnomalyGuard on;
    CHECK(autograd::is_anomaly_enabled());
    Tensor y = mul(x, 2.0);  // finite: no error
    CHECK_ERROR(log(mul(x, 1.0)), "anomaly detected", "log", "output 0 of shape [3]", "inputs of shapes [3]",
                "recorded at");
    // Forward finite, backward not: sqrt at 0 has an infinite derivative.
    Tensor s = sum(sqrt(x));
    CHECK_ERROR(s.backward(), "anomaly detected", "backward of sqrt", "input 0", "[3]");
    // An input already non-finite is marked so.
    Tensor bad = from_vector<double>({NAN, 1}, {2});
    CHECK_ERROR(add(bad, from_vector<double>({1, 1}, {2}).requires_grad_(true)), "add", "[2] (non-finite)");
  }
  CHECK_FALSE(autograd::is_anomaly_enabled());
  Tensor quiet = log(mul(x, 1.0));  // off again: -inf passes, as PyTorch without anomaly mode
  CHECK(std::isinf(vals(quiet)[1]));
  CHECK(autograd::all_finite(ones({4})));
  CHECK_FALSE(autograd::all_finite(from_vector<double>({1, INFINITY}, {2})));
}

TEST_CASE("clip_grad_norm_: norm types and error_if_nonfinite") {
  Tensor a = ones({4}).requires_grad_(true), b = ones({2}).requires_grad_(true);
  a.set_grad(from_vector<double>({3, -4, 0, 0}, {4}, kFloat32));
  b.set_grad(from_vector<double>({0, 12}, {2}, kFloat32));
  CHECK(optim::clip_grad_norm_({a, b}, 100.0) == doctest::Approx(13));
  CHECK(optim::clip_grad_norm_({a, b}, 100.0, 1.0) == doctest::Approx(19));
  CHECK(optim::clip_grad_norm_({a, b}, 100.0, INFINITY) == doctest::Approx(12));
  CHECK(optim::clip_grad_norm_({a, b}, 100.0, 3.0) == doctest::Approx(std::cbrt(27.0 + 64 + 1728)));
  b.set_grad(from_vector<double>({NAN, 1}, {2}, kFloat32));
  CHECK(std::isnan(optim::clip_grad_norm_({a, b}, 1.0)));
  CHECK_ERROR(optim::clip_grad_norm_({a, b}, 1.0, 2.0, true), "clip_grad_norm_", "nan", "error_if_nonfinite");
  CHECK_ERROR(optim::clip_grad_norm_({a, b}, 1.0, INFINITY, true), "clip_grad_norm_", "nan");
  CHECK_ERROR(optim::clip_grad_norm_({a}, 1.0, -1.0), "clip_grad_norm_", "norm_type");
}

TEST_CASE("empty batches: conv2d and conv_transpose2d with a bias give empty outputs and zero bias gradients") {
  for (bool transposed : {false, true}) {
    CAPTURE(transposed);
    Tensor x = zeros({0, 3, 5, 5}).requires_grad_(true);
    Tensor w = randn(transposed ? Shape{3, 4, 3, 3} : Shape{4, 3, 3, 3}).requires_grad_(true);
    Tensor b = randn({4}).requires_grad_(true);
    Tensor y = transposed ? conv_transpose2d(x, w, b) : conv2d(x, w, b);
    CHECK(y.sizes() == (transposed ? Shape{0, 4, 7, 7} : Shape{0, 4, 3, 3}));
    sum(y).backward();
    CHECK(vals(b.grad()) == std::vector<double>(4, 0.0));
    CHECK(vals(w.grad()) == std::vector<double>(size_t(w.numel()), 0.0));
    CHECK(x.grad().sizes() == x.sizes());
  }
}

TEST_CASE("DataLoader: float labels and an empty dataset are errors that say what to do") {
  CHECK_ERROR(io::DataLoader(io::TensorDataset{zeros({4, 1, 2, 2}), zeros({4})}, {}), "DataLoader", "int64",
              "float32", "to(kInt64)");
  CHECK_ERROR(io::DataLoader(io::TensorDataset{}, {}), "DataLoader", "default-constructed TensorDataset");
  CHECK_ERROR(io::DataLoader(io::TensorDataset{zeros({4, 1, 2, 2}), zeros({3}, kInt64)}, {}), "DataLoader",
              "[4, 1, 2, 2]", "[3]");
}

namespace {
// Ten Adam steps of a small CNN (GEMM and direct convs, batch norm, pooling, an open conv, a long
// sum) at `threads` threads; the parameters after them.
std::vector<std::vector<double>> train_steps(int threads) {
  const int saved = get_num_threads();
  set_num_threads(threads);
  manual_seed(21);
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(3, 16, 3, Conv2dOptions{.padding = 1}), std::make_shared<nn::BatchNorm2d>(16),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Conv2d>(16, 16, 3, Conv2dOptions{.stride = 2, .padding = 1}),
      std::make_shared<nn::MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(256, 10));
  Tensor wo = (randn({8, 3, 3, 3}) * 0.1).requires_grad_(true);
  std::vector<Tensor> params = net->parameters();
  params.push_back(wo);
  optim::Adam opt(params, {.lr = 1e-2});
  Tensor x = randn({16, 3, 16, 16});
  Tensor y = randint(0, 10, {16}, kInt64);
  for (int s = 0; s < 10; ++s) {
    opt.zero_grad();
    Tensor oc = open_conv2d(x, wo, {}, combine::L1{}, {.padding = 1});
    Tensor loss = add(cross_entropy((*net)(x), y), mul(mean(mul(oc, oc)), 1e-3));
    loss.backward();
    opt.step();
  }
  std::vector<std::vector<double>> out;
  for (const Tensor& p : params) out.push_back(vals(p));
  set_num_threads(saved);
  return out;
}
}  // namespace

TEST_CASE("use_deterministic_algorithms: training is bitwise equal at 1, 2 and 3 threads") {
  use_deterministic_algorithms(true);
  CHECK(are_deterministic_algorithms_enabled());
  const auto one = train_steps(1), two = train_steps(2), three = train_steps(3);
  use_deterministic_algorithms(false);
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    CAPTURE(i);
    CHECK(one[i] == two[i]);
    CHECK(one[i] == three[i]);
  }
  // A full reduction over more than one piece: the same at any thread count in deterministic mode.
  Tensor big = randn({1 << 18});
  const int saved = get_num_threads();
  use_deterministic_algorithms(true);
  set_num_threads(1);
  const double s1 = sum(big).item();
  set_num_threads(2);
  const double s2 = sum(big).item();
  use_deterministic_algorithms(false);
  set_num_threads(saved);
  CHECK(s1 == s2);
}
