// conv2d forward+backward in LibTorch, with oneDNN (mkldnn) on or off (off: its own im2col + BLAS
// path). Usage: torch_conv on|off [threads]. Prints one line per layer: name and milliseconds.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  const bool onednn = argc > 1 && std::string(argv[1]) == "on";
  torch::set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  at::globalContext().setUserEnabledMkldnn(onednn);
  struct L { const char* name; int64_t N, C, H, Cout, k, pad; };
  const std::vector<L> layers = {{"lenet1", 64, 1, 28, 6, 5, 2}, {"lenet2", 64, 6, 14, 16, 5, 0},
                                 {"c64", 64, 64, 32, 64, 3, 1}, {"c128", 64, 128, 16, 128, 3, 1}};
  for (const L& l : layers) {
    torch::manual_seed(0);
    auto x = torch::randn({l.N, l.C, l.H, l.H}, torch::requires_grad());
    auto w = torch::randn({l.Cout, l.C, l.k, l.k}, torch::requires_grad());
    auto b = torch::zeros({l.Cout}, torch::requires_grad());
    auto step = [&] {
      x.mutable_grad() = torch::Tensor();
      w.mutable_grad() = torch::Tensor();
      b.mutable_grad() = torch::Tensor();
      auto y = torch::conv2d(x, w, b, 1, l.pad);
      y.backward(torch::ones_like(y));
    };
    for (int i = 0; i < 2; ++i) step();
    std::vector<double> t;
    for (int i = 0; i < (l.C == 1 ? 30 : 10); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      step();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::printf("%s %.3f\n", l.name, t[t.size() / 2] * 1e3);
  }
  return 0;
}
