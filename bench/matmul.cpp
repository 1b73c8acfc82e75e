// matmul through minigrad against a direct cblas_sgemm of the same size, side by side in one run.
// minigrad's figure includes everything a user pays: checks, output allocation, dispatch.
// Usage: bench_matmul [threads]   (default: all cores);  bench_matmul --core: the OpenBLAS kernel set
#include <minigrad/minigrad.h>

#include "blas_threads.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace minigrad;
using clk = std::chrono::steady_clock;

template <class F>
double time_once(F&& f) {
  auto t0 = clk::now();
  f();
  return std::chrono::duration<double>(clk::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--core") {  // just the OpenBLAS kernel set, for bench/run.sh
    std::printf("%s\n", blas_kernel_name().c_str());
    return 0;
  }
  if (argc > 1) set_num_threads(std::atoi(argv[1]));
  std::printf("%s, threads: %d, OpenBLAS kernels: %s (minigrad's own kernels: CPU ISA level %s)\n\n",
              cpu_model_name().c_str(), get_num_threads(), blas_kernel_name().c_str(), cpu_isa_name(cpu_isa()));
  std::printf("| n | cblas_sgemm ms | minigrad matmul ms | cblas GFLOP/s | minigrad GFLOP/s | minigrad / cblas |\n");
  std::printf("|---|---|---|---|---|---|\n");
  // The last row multiplies a transposed view: minigrad must hand it to BLAS as a flag, not copy it.
  for (auto [n, transposed] : {std::pair<int64_t, bool>{256, false}, {512, false}, {1024, false},
                               {1024, true}}) {
    manual_seed(0);
    Tensor a = randn({n, n}), b = randn({n, n});
    std::vector<float> c(size_t(n * n));
    const float* ap = a.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    auto direct = [&] {
      cblas_sgemm(CblasRowMajor, transposed ? CblasTrans : CblasNoTrans, CblasNoTrans, int(n), int(n),
                  int(n), 1.0f, ap, int(n), bp, int(n), 0.0f, c.data(), int(n));
    };
    Tensor keep;
    auto ours = [&] { keep = matmul(transposed ? a.t() : a, b); };
    const int reps = n <= 256 ? 400 : n <= 512 ? 100 : 30;
    const int T = get_num_threads();
    std::vector<double> td, to;
    // In alternating blocks, so drift hits both alike; not call by call, as OpenBLAS's OpenMP
    // threads spin on after its calls and would take a core from minigrad's (see blas_settle).
    for (int block = 0; block < 4; ++block) {
      blas_threads(T);  // OpenBLAS on T threads of its own
      for (int i = 0; i < 3; ++i) direct();  // warm up (threads, caches)
      for (int i = 0; i < reps / 4; ++i) td.push_back(time_once(direct));
      blas_settle();
      blas_threads(1);  // as minigrad leaves it (set outside the timing: a program never switches)
      for (int i = 0; i < 3; ++i) ours();
      for (int i = 0; i < reps / 4; ++i) to.push_back(time_once(ours));
    }
    double md = median(td), mo = median(to), flop = 2.0 * double(n) * double(n) * double(n);
    std::printf("| %lld%s | %.3f | %.3f | %.1f | %.1f | %.3f |\n", (long long)n, transposed ? " (Aᵀ·B)" : "", md * 1e3, mo * 1e3,
                flop / md * 1e-9, flop / mo * 1e-9, mo / md);
  }
  return 0;
}
