// The open conv's Max / Min kernels alone: forward+backward of max-plus (x + w, Max) and erosion
// (x - w, Min), 64->64 3x3 on 32x32, median of 5 after a warm-up.
// Usage: bench_open_conv_maxmin [threads] [batch]. The kernels are templates instantiated here, so
// compiling this one file against another checkout's headers and library compares two kernel
// versions in one binary's conditions (bench/RESULTS.md, issue 14, gives the commands).
#include <minigrad/minigrad.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace minigrad;

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 2);
  const int64_t N = argc > 2 ? std::atoll(argv[2]) : 64;
  manual_seed(0);
  Tensor x = randn({N, 64, 32, 32}, requires_grad()), w = randn({64, 64, 3, 3}, requires_grad());
  auto time = [&](auto comb, Reduce r) {
    std::vector<double> t;
    for (int i = 0; i < 6; ++i) {
      x.zero_grad();
      w.zero_grad();
      const auto t0 = std::chrono::steady_clock::now();
      Tensor y = open_conv2d(x, w, {}, comb, {.padding = 1, .reduce = r});
      y.backward(ones_like(y));
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin() + 1, t.end());
    return t[3] * 1e3;  // the median of the 5 after the warm-up
  };
  std::printf("%s, CPU ISA level %s, threads %d, batch %lld\n", cpu_model_name().c_str(), cpu_isa_name(cpu_isa()),
              get_num_threads(), (long long)N);
  std::printf("max-plus %.1f ms  erosion %.1f ms\n", time(combine::Add{}, Reduce::Max), time(combine::Sub{}, Reduce::Min));
}
