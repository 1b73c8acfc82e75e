// The conv layers every conv benchmark runs (bench_conv and LibTorch's bench/libtorch/torch_conv),
// batch 64: the four of the first benchmark plus the shapes a ResNet-style network meets.
#pragma once
#include <cstdint>
#include <vector>

struct BenchLayer {
  const char* key;
  const char* name;
  int64_t N, C, H, Cout, k, pad, stride, groups;
};

inline const std::vector<BenchLayer>& bench_layers() {
  static const std::vector<BenchLayer> v = {
      {"lenet1", "LeNet conv1 1->6 5x5 28x28 pad 2", 64, 1, 28, 6, 5, 2, 1, 1},
      {"lenet2", "LeNet conv2 6->16 5x5 14x14", 64, 6, 14, 16, 5, 0, 1, 1},
      {"first", "3->32 3x3 32x32 pad 1 (first layer)", 64, 3, 32, 32, 3, 1, 1, 1},
      {"c32", "32->32 3x3 32x32 pad 1", 64, 32, 32, 32, 3, 1, 1, 1},
      {"c64", "64->64 3x3 32x32 pad 1", 64, 64, 32, 64, 3, 1, 1, 1},
      {"c128", "128->128 3x3 16x16 pad 1", 64, 128, 16, 128, 3, 1, 1, 1},
      {"c256", "256->256 3x3 8x8 pad 1", 64, 256, 8, 256, 3, 1, 1, 1},
      {"s2", "64->128 3x3 stride 2 32x32 pad 1", 64, 64, 32, 128, 3, 1, 2, 1},
      {"pw", "1x1 128->256 16x16", 64, 128, 16, 256, 1, 0, 1, 1},
      {"dw", "depthwise 3x3 64 ch 32x32 pad 1", 64, 64, 32, 64, 3, 1, 1, 64},
  };
  return v;
}
