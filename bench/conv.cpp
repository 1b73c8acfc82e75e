// conv2d forward+backward through minigrad, beside OpenBLAS sgemm on the same GEMM shapes, in one
// run. Usage: bench_conv [threads] [--raw] [--algo=auto|gemm|direct]
// (--raw: "key ms gflops sgemm_gflops" lines for bench/run.sh; --algo forces set_conv_algorithm)
#include <cblas.h>
#include <minigrad/minigrad.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace minigrad;
using clk = std::chrono::steady_clock;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
template <class F>
double bench(F&& f, int reps) {
  for (int i = 0; i < 2; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = clk::now();
    f();
    t.push_back(std::chrono::duration<double>(clk::now() - t0).count());
  }
  return median(t);
}
struct Layer {
  const char* key;
  const char* name;
  int64_t N, C, H, W, Cout, k, pad;
};
}  // namespace

int main(int argc, char** argv) {
  bool raw = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--raw") raw = true;
    else if (a == "--algo=gemm") set_conv_algorithm(ConvAlgorithm::Gemm);
    else if (a == "--algo=direct") set_conv_algorithm(ConvAlgorithm::Direct);
    else if (a == "--algo=auto") set_conv_algorithm(ConvAlgorithm::Auto);
    else if (!a.empty() && a[0] != '-') set_num_threads(std::atoi(a.c_str()));
    else {
      std::fprintf(stderr, "usage: bench_conv [threads] [--raw] [--algo=auto|gemm|direct]\n");
      return 2;
    }
  }
  if (!raw) {
    std::printf("threads: %d, conv workspace limit: %zu MiB, OpenBLAS kernels: %s\n\n", get_num_threads(),
                conv_workspace_limit() >> 20, blas_kernel_name().c_str());
    std::printf("| layer | fwd+bwd ms | GFLOP/s | sgemm GFLOP/s (same GEMMs) | conv / sgemm time |\n|---|---|---|---|---|\n");
  }
  const std::vector<Layer> layers = {{"lenet1", "LeNet conv1 1->6 5x5 28x28 pad 2", 64, 1, 28, 28, 6, 5, 2},
                                     {"lenet2", "LeNet conv2 6->16 5x5 14x14", 64, 6, 14, 14, 16, 5, 0},
                                     {"c64", "64->64 3x3 32x32 pad 1", 64, 64, 32, 32, 64, 3, 1},
                                     {"c128", "128->128 3x3 16x16 pad 1", 64, 128, 16, 16, 128, 3, 1}};
  for (const Layer& l : layers) {
    manual_seed(0);
    Tensor x = randn({l.N, l.C, l.H, l.W}, requires_grad()), w = randn({l.Cout, l.C, l.k, l.k}, requires_grad()),
           b = zeros({l.Cout}, requires_grad());
    const int64_t Ho = l.H + 2 * l.pad - l.k + 1, L = Ho * Ho, K = l.C * l.k * l.k;
    auto step = [&] {
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
      Tensor y = conv2d(x, w, b, {.padding = l.pad});
      y.backward(ones_like(y));
    };
    int reps = l.C == 1 ? 30 : 10;
    double t = bench(step, reps);
    // The same three GEMMs, one image at a time, straight through OpenBLAS.
    std::vector<float> A(size_t(l.Cout * K), 1.f), B(size_t(K * L), 1.f), Cm(size_t(l.Cout * L)), D(size_t(K * L));
    auto gemms = [&] {
      for (int64_t n = 0; n < l.N; ++n) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(l.Cout), int(L), int(K), 1.f, A.data(), int(K),
                    B.data(), int(L), 0.f, Cm.data(), int(L));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(l.Cout), int(K), int(L), 1.f, Cm.data(), int(L),
                    B.data(), int(L), 1.f, A.data(), int(K));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(K), int(L), int(l.Cout), 1.f, A.data(), int(K),
                    Cm.data(), int(L), 0.f, D.data(), int(L));
      }
    };
    double tg = bench(gemms, reps);
    const double flop = 3.0 * 2.0 * double(l.N) * double(l.Cout) * double(L) * double(K);
    if (raw) std::printf("%s %.3f %.1f %.1f\n", l.key, t * 1e3, flop / t * 1e-9, flop / tg * 1e-9);
    else std::printf("| %s | %.2f | %.1f | %.1f | %.2f |\n", l.name, t * 1e3, flop / t * 1e-9, flop / tg * 1e-9, t / tg);
  }
  return 0;
}
