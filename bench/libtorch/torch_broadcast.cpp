// The naive "unfold and broadcast" AdderNet conv in LibTorch, as researchers write it today:
// cols = unfold(x); out = -|cols[:, None] - w[None, :, :, None]|.sum(2). Forward + backward of the
// 64->64 3x3 layer on 32x32 at a small batch; prints the median time and the broadcast's size.
// Usage: torch_broadcast [batch] [threads]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 4;
  torch::set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  torch::manual_seed(0);
  auto x = torch::randn({N, 64, 32, 32}, torch::requires_grad());
  auto w = torch::randn({64, 64 * 9}, torch::requires_grad());
  auto step = [&] {
    x.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
    auto cols = torch::nn::functional::unfold(x, torch::nn::functional::UnfoldFuncOptions({3, 3}).padding(1));
    auto out = -(cols.unsqueeze(1) - w.unsqueeze(0).unsqueeze(3)).abs().sum(2);  // (N, 64, L)
    out.backward(torch::ones_like(out));
  };
  step();
  std::vector<double> t;
  for (int i = 0; i < 3; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  std::printf("libtorch broadcast L1 conv, batch %lld: %.1f ms (broadcast tensor %.0f MB)\n", (long long)N, t[1] * 1e3,
              double(N) * 64 * 576 * 1024 * 4 / 1e6);
  return 0;
}
