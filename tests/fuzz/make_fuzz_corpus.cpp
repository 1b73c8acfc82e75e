// Writes the fuzz harnesses' seed corpora: small valid files of every kind the loaders read, one
// directory per harness under the given directory (make_fuzz_corpus OUT_DIR).
#include <stb/stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

#include "fuzz_model.h"
#include "tests/jpeg_encode.h"
#include "minigrad.h"

using namespace minigrad;
namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void put(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc != 2) {
    std::cerr << "usage: make_fuzz_corpus OUT_DIR\n";
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* h : {"safetensors", "checkpoint", "idx", "idx_gz", "cifar", "image"}) fs::create_directories(out / h);
  manual_seed(1);
  // safetensors: every dtype, metadata, an empty tensor; and one without a checksum.
  io::save_safetensors((out / "safetensors/a").string(),
                       {{"f", randn({2, 3})}, {"d", randn({4}, kFloat64)}, {"i", arange(5, kInt64)},
                        {"u", zeros({3}, kUInt8)}, {"e", zeros({0, 2})}},
                       {{"epoch", "3"}, {"note", "seed"}});
  {
    std::string h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    while (h.size() % 8) h += ' ';
    std::string len;
    for (int i = 0; i < 8; ++i) len += char((h.size() >> (8 * i)) & 0xff);
    put(out / "safetensors/b", len + h + std::string(8, '\0'));
  }
  // checkpoint: the harness's model and optimizer after one step.
  {
    auto m = mgfuzz::fuzz_model();
    optim::Adam opt(m->parameters(), {.lr = 1e-3});
    Tensor x = randn({2, 1, 4, 4});
    opt.zero_grad();
    cross_entropy((*m)(x), from_vector<int64_t>({0, 2})).backward();
    opt.step();
    io::save_checkpoint((out / "checkpoint/a").string(), *m, &opt, 1);
  }
  // IDX: images and labels, plain (and gzip for the raw-bytes harness).
  std::vector<uint8_t> px(3 * 4 * 5);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 7);
  io::write_idx((out / "idx/images").string(), px, {3, 4, 5});
  io::write_idx((out / "idx/labels").string(), {1, 2, 3}, {3});
  io::write_idx((out / "idx/images.gz").string(), px, {3, 4, 5});
  put(out / "idx_gz/images", slurp((out / "idx/images").string()));
  put(out / "idx_gz/labels", slurp((out / "idx/labels").string()));
  // CIFAR: two records.
  std::string rec;
  for (int r = 0; r < 2; ++r) {
    rec += char(r * 3);
    for (int i = 0; i < 3072; ++i) rec += char((i * 13 + r) & 0xff);
  }
  put(out / "cifar/two", rec);
  // Images: PNG (gray, RGB), BMP and JPEG, each behind the byte that picks the channels.
  std::vector<unsigned char> rgb(6 * 5 * 3), gray(6 * 5);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = (unsigned char)(i * 11);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = (unsigned char)(i * 9);
  const std::string tmp = (out / "image/.tmp").string();
  auto image_seed = [&](const std::string& name, char channels) {
    put(out / "image" / name, std::string(1, channels) + slurp(tmp));
    fs::remove(tmp);
  };
  stbi_write_png(tmp.c_str(), 6, 5, 3, rgb.data(), 6 * 3);
  image_seed("rgb.png", 0);
  stbi_write_png(tmp.c_str(), 6, 5, 1, gray.data(), 6);
  image_seed("gray.png", 2);
  stbi_write_bmp(tmp.c_str(), 6, 5, 3, rgb.data());
  image_seed("rgb.bmp", 1);
  stbi_write_jpg(tmp.c_str(), 6, 5, 3, rgb.data(), 90);
  image_seed("rgb.jpg", 0);
  // libjpeg's: progressive RGB (10 scans) and baseline gray, 20x12 (two MCU rows of 4:2:0).
  std::vector<uint8_t> rgb2(20 * 12 * 3), gray2(20 * 12);
  for (size_t i = 0; i < rgb2.size(); ++i) rgb2[i] = uint8_t(i * 7);
  for (size_t i = 0; i < gray2.size(); ++i) gray2[i] = uint8_t(i * 5);
  put(out / "image/progressive.jpg", std::string(1, char(0)) + mgtest::encode_jpeg(rgb2, 20, 12, 3, true, 80));
  put(out / "image/gray.jpg", std::string(1, char(2)) + mgtest::encode_jpeg(gray2, 20, 12, 1, false, 80));
  std::cout << "make_fuzz_corpus: seeds in " << out << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "make_fuzz_corpus: " << e.what() << "\n";
  return 1;
}
