// conv2d forward+backward through minigrad, beside OpenBLAS sgemm on the same GEMM shapes and the
// measured FMA peak of the running ISA level, in one run.
// Usage: bench_conv [threads] [--raw] [--algo=auto|gemm|direct] [--levels] [--peak]
//   --raw: "key ms gflops sgemm_gflops peak_gflops isa algo" lines for bench/run.sh
//   --algo forces set_conv_algorithm; MINIGRAD_CPU_ISA picks the ISA level
//   --levels: print the ISA levels this CPU supports and exit; --peak: print the FMA peak and exit
#include <minigrad/minigrad.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "blas_threads.h"
#include "layers.h"
#include "timing.h"

using namespace minigrad;


int main(int argc, char** argv) {
  bool raw = false;
  int threads = get_num_threads();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--raw") raw = true;
    else if (a == "--algo=gemm") set_conv_algorithm(ConvAlgorithm::Gemm);
    else if (a == "--algo=direct") set_conv_algorithm(ConvAlgorithm::Direct);
    else if (a == "--algo=auto") set_conv_algorithm(ConvAlgorithm::Auto);
    else if (a == "--levels") {
      for (CpuIsa l : cpu_isa_levels()) std::printf("%s\n", cpu_isa_name(l));
      return 0;
    } else if (a == "--peak") {
      std::printf("%.1f\n", measure_fma_peak(threads));
      return 0;
    } else if (!a.empty() && a[0] != '-') {
      threads = std::atoi(a.c_str());
      set_num_threads(threads);
    } else {
      std::fprintf(stderr, "usage: bench_conv [threads] [--raw] [--algo=auto|gemm|direct] [--levels] [--peak]\n");
      return 2;
    }
  }
  const double peak = measure_fma_peak(threads);
  if (!raw) {
    std::printf("%s, ISA level %s (best %s), %d threads, FMA peak %.1f GFLOP/s, OpenBLAS kernels %s\n\n",
                cpu_model_name().c_str(), cpu_isa_name(cpu_isa()), cpu_isa_name(cpu_isa_best()), threads, peak,
                blas_kernel_name().c_str());
    std::printf("| layer | fwd+bwd ms | GFLOP/s | %% of FMA peak | sgemm GFLOP/s (same GEMMs) | algorithm |\n"
                "|---|---|---|---|---|---|\n");
  }
  for (const BenchLayer& l : bench_layers()) {
    manual_seed(0);
    Tensor x = randn({l.N, l.C, l.H, l.H}, requires_grad()),
           w = randn({l.Cout, l.C / l.groups, l.k, l.k}, requires_grad()), b = zeros({l.Cout}, requires_grad());
    const Conv2dOptions o{.stride = l.stride, .padding = l.pad, .groups = l.groups};
    const int64_t Ho = (l.H + 2 * l.pad - l.k) / l.stride + 1, L = Ho * Ho, Cg = l.C / l.groups,
                  Og = l.Cout / l.groups, K = Cg * l.k * l.k;
    auto step = [&] {
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
      Tensor y = conv2d(x, w, b, o);
      y.backward(ones_like(y));
    };
    const double flop = 3.0 * 2.0 * double(l.N) * double(l.Cout) * double(L) * double(K);
    const int reps = std::clamp(int(2e9 / flop), 5, 30);
    const double t = median_seconds(step, reps);
    // The same three GEMMs per group, one image at a time, straight through OpenBLAS.
    std::vector<float> A(size_t(Og * K), 1.f), B(size_t(K * L), 1.f), Cm(size_t(Og * L)), D(size_t(K * L));
    auto gemms = [&] {
      for (int64_t n = 0; n < l.N; ++n)
        for (int64_t g = 0; g < l.groups; ++g) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Og), int(L), int(K), 1.f, A.data(), int(K),
                      B.data(), int(L), 0.f, Cm.data(), int(L));
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Og), int(K), int(L), 1.f, Cm.data(), int(L),
                      B.data(), int(L), 1.f, A.data(), int(K));
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(K), int(L), int(Og), 1.f, A.data(), int(K),
                      Cm.data(), int(L), 0.f, D.data(), int(L));
        }
    };
    blas_threads(threads);  // OpenBLAS on its own threads (minigrad's next GEMM sets it back to 1)
    const double tg = median_seconds(gemms, std::max(3, reps / 3));
    blas_settle();
    std::string algo = explain_conv(x, w, o);
    algo = algo.substr(algo.find(": ") + 2);
    const std::string algo_short = algo.substr(0, algo.find(':'));
    if (raw)
      std::printf("%s %.3f %.1f %.1f %.1f %s %s\n", l.key, t * 1e3, flop / t * 1e-9, flop / tg * 1e-9, peak,
                  cpu_isa_name(cpu_isa()), algo_short == "unfold + GEMM" ? "gemm" : algo_short == "1x1 GEMM" ? "1x1" : "direct");
    else
      std::printf("| %s | %.2f | %.1f | %.0f%% | %.1f | %s |\n", l.name, t * 1e3, flop / t * 1e-9,
                  100 * flop / t * 1e-9 / peak, flop / tg * 1e-9, algo.c_str());
  }
  return 0;
}
