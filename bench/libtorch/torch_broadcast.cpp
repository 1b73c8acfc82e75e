// The AdderNet (L1) conv in LibTorch, the two ways researchers write it today:
//   broadcast: cols = unfold(x); out = -|cols[:, None] - w[None, :, :, None]|.sum(2)
//   cdist:     out = -cdist(cols^T, w, p=1), LibTorch's best formulation (no broadcast tensor)
// Forward + backward of the 64->64 3x3 layer on 32x32; prints the median of 3 runs.
// Usage: torch_broadcast [batch] [threads] [broadcast|cdist]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 4;
  torch::set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  const bool cdist = argc > 3 && std::string(argv[3]) == "cdist";
  torch::manual_seed(0);
  auto x = torch::randn({N, 64, 32, 32}, torch::requires_grad());
  auto w = torch::randn({64, 64 * 9}, torch::requires_grad());
  auto step = [&] {
    x.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
    auto cols = torch::nn::functional::unfold(x, torch::nn::functional::UnfoldFuncOptions({3, 3}).padding(1));
    auto out = cdist ? -torch::cdist(cols.transpose(1, 2), w.unsqueeze(0).expand({N, 64, 64 * 9}), 1.0).transpose(1, 2)
                     : -(cols.unsqueeze(1) - w.unsqueeze(0).unsqueeze(3)).abs().sum(2);  // (N, 64, L)
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
  if (cdist)
    std::printf("libtorch unfold + cdist(p=1) L1 conv, batch %lld: %.1f ms\n", (long long)N, t[1] * 1e3);
  else
    std::printf("libtorch broadcast L1 conv, batch %lld: %.1f ms (broadcast tensor %.0f MB)\n", (long long)N,
                t[1] * 1e3, double(N) * 64 * 576 * 1024 * 4 / 1e6);
  return 0;
}
