// The three passes of the CPU's direct conv kernels (forward, data gradient, weight gradient), each
// timed alone at the running ISA level (MINIGRAD_CPU_ISA picks it), straight through the kernel
// table: for tuning register blocks without the op front end around them.
// Usage: bench_conv_passes C H Cout k pad [threads]   (batch 64, stride 1, float32)
#include <minigrad/minigrad.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ops/cpu/isa/kernels.h"
#include "timing.h"

using namespace minigrad;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: bench_conv_passes C H Cout k pad [threads]\n");
    return 2;
  }
  const int64_t C = std::atoll(argv[1]), H = std::atoll(argv[2]), Co = std::atoll(argv[3]), k = std::atoll(argv[4]),
                pad = std::atoll(argv[5]), N = 64;
  set_num_threads(argc > 6 ? std::atoi(argv[6]) : 2);
  const int64_t Ho = H + 2 * pad - k + 1;
  if (C < 1 || Co < 1 || k < 1 || pad < 0 || Ho < 1) {
    std::fprintf(stderr, "bench_conv_passes: no conv of %lld -> %lld channels, %lldx%lld, kernel %lld, pad %lld\n",
                 (long long)C, (long long)Co, (long long)H, (long long)H, (long long)k, (long long)pad);
    return 2;
  }
  const Conv2dGeometry g{C, H, H, k, k, 1, 1, pad, pad, 1, 1, Ho, Ho};
  std::vector<float> x(size_t(N * C * H * H), 1.f), w(size_t(Co * C * k * k), 0.5f), y(size_t(N * Co * Ho * Ho)),
      dw(size_t(Co * C * k * k)), dx(size_t(N * C * H * H));
  const auto& K = cpu::isa_kernels().f32;
  const double gflop = 2.0 * double(N * Co * C * k * k * Ho * Ho) * 1e-9;
  const double tf = median_seconds([&] { K.conv_forward(y.data(), x.data(), w.data(), N, 1, Co, g); }, 7, 1);
  const double td = median_seconds([&] { K.conv_data(dx.data(), y.data(), w.data(), N, 1, Co, g); }, 7, 1);
  const double tw = median_seconds([&] { K.conv_weight(dw.data(), y.data(), x.data(), N, 1, Co, g); }, 7, 1);
  std::printf("%s, level %s, %d threads, %lld->%lld %lldx%lld k%lld: forward %.2f ms %.0f GFLOP/s, data %.2f ms %.0f, "
              "weight %.2f ms %.0f\n",
              cpu_model_name().c_str(), cpu_isa_name(cpu_isa()), get_num_threads(), (long long)C, (long long)Co,
              (long long)H, (long long)H, (long long)k, tf * 1e3, gflop / tf, td * 1e3, gflop / td, tw * 1e3,
              gflop / tw);
  return 0;
}
