// conv2d forward+backward in LibTorch, with oneDNN (mkldnn) on or off (off: its own im2col + BLAS
// path), over the layers of bench/layers.h. Usage: torch_conv on|off [threads]. Prints one line per
// layer: key and median milliseconds.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../layers.h"
#include "../timing.h"

int main(int argc, char** argv) {
  const bool onednn = argc > 1 && std::string(argv[1]) == "on";
  torch::set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  at::globalContext().setUserEnabledMkldnn(onednn);
  for (const BenchLayer& l : bench_layers()) {
    torch::manual_seed(0);
    auto x = torch::randn({l.N, l.C, l.H, l.H}, torch::requires_grad());
    auto w = torch::randn({l.Cout, l.C / l.groups, l.k, l.k}, torch::requires_grad());
    auto b = torch::zeros({l.Cout}, torch::requires_grad());
    auto step = [&] {
      x.mutable_grad() = torch::Tensor();
      w.mutable_grad() = torch::Tensor();
      b.mutable_grad() = torch::Tensor();
      auto y = torch::conv2d(x, w, b, l.stride, l.pad, 1, l.groups);
      y.backward(torch::ones_like(y));
    };
    const int64_t Ho = (l.H + 2 * l.pad - l.k) / l.stride + 1;
    const double flop = 6.0 * l.N * l.Cout * Ho * Ho * (l.C / l.groups) * l.k * l.k;
    const int reps = std::clamp(int(2e9 / flop), 5, 30);
    std::printf("%s %.3f\n", l.key, median_seconds(step, reps) * 1e3);
  }
  return 0;
}
