// The open convolution against minigrad's plain conv of the same shape: forward+backward time and
// peak tensor memory (the allocator's counters). Usage: bench_open_conv [threads] [batch]
#include <minigrad/minigrad.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

using namespace minigrad;

namespace {
template <class F>
std::pair<double, double> measure(F&& step, int reps) {
  step();
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base = memory_stats().current_bytes;
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], double(memory_stats().peak_bytes - base) / (1 << 20)};
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) set_num_threads(std::atoi(argv[1]));
  const int64_t N = argc > 2 ? std::atoll(argv[2]) : 64;
  std::printf("%s, CPU ISA level %s\n", cpu_model_name().c_str(), cpu_isa_name(cpu_isa()));
  std::printf("threads %d, batch %lld\n\n| layer | combine | fwd+bwd ms | peak MiB | time / plain | memory / plain |\n|---|---|---|---|---|---|\n",
              get_num_threads(), (long long)N);
  struct L { const char* name; int64_t C, H; };
  for (L l : {L{"64->64 3x3 32x32", 64, 32}, L{"128->128 3x3 16x16", 128, 16}}) {
    manual_seed(0);
    Tensor x = randn({N, l.C, l.H, l.H}, requires_grad()), w = randn({l.C, l.C, 3, 3}, requires_grad());
    auto run = [&](auto comb, Reduce red) {
      return [&, comb, red] {
        x.zero_grad();
        w.zero_grad();
        Tensor y = open_conv2d(x, w, {}, comb, {.padding = 1, .reduce = red});
        y.backward(ones_like(y));
      };
    };
    const int reps = 3;
    auto plain = measure(run(combine::Mul{}, Reduce::Sum), reps);
    auto l1 = measure(run(combine::L1{}, Reduce::Sum), reps);
    auto mp = measure(run(combine::Add{}, Reduce::Max), reps);
    auto rbf = measure(run(combine::L2{}, Reduce::Sum), reps);
    for (auto [name, r] : {std::pair<const char*, std::pair<double, double>>{"x*w, sum (plain conv)", plain},
                           {"-|x-w|, sum (AdderNet)", l1}, {"x+w, max (morphological)", mp},
                           {"-(x-w)^2, sum (RBF, separable)", rbf}})
      std::printf("| %s | %s | %.1f | %.1f | %.2f | %.2f |\n", l.name, name, r.first * 1e3, r.second,
                  r.first / plain.first, r.second / plain.second);
  }

  // Where the memory goes, one 64->64 3x3 32x32 layer at batch 4 (the broadcast formulation in
  // minigrad ops still fits there): what forward leaves held (output + what the tape saved) and
  // the peak of forward + backward, from the allocator's counters.
  {
    const int64_t B = 4;
    manual_seed(0);
    Tensor x = randn({B, 64, 32, 32}, requires_grad()), w = randn({64, 64, 3, 3}, requires_grad());
    auto broadcast_l1 = [&] {  // unfold, broadcast the patches against W, reduce: the PyTorch recipe
      Tensor cols = unfold(x, {.kernel_size = 3, .padding = 1});                 // (B, K, L)
      Tensor d = sub(cols.unsqueeze(1), w.reshape({1, 64, -1, 1}));             // (B, O, K, L)
      return sum(neg(abs(d)), {2}).reshape({B, 64, 32, 32});
    };
    struct F { const char* name; std::function<Tensor()> fn; };
    std::vector<F> forms{
        {"plain conv (GEMM, path 1)", [&] { return open_conv2d(x, w, {}, combine::Mul{}, {.padding = 1}); }},
        {"RBF -(x-w)^2 (separable, path 2)", [&] { return open_conv2d(x, w, {}, combine::L2{}, {.padding = 1}); }},
        {"AdderNet -|x-w| (fused, path 3)", [&] { return open_conv2d(x, w, {}, combine::L1{}, {.padding = 1}); }},
        {"AdderNet as unfold + broadcast", broadcast_l1}};
    std::printf("\nbatch %lld, 64->64 3x3 32x32: input %.1f MiB, output %.1f MiB\n\n| formulation | held after forward MiB | peak fwd+bwd MiB | fwd+bwd ms |\n|---|---|---|---|\n",
                (long long)B, x.numel() * 4.0 / (1 << 20), x.numel() * 4.0 / (1 << 20));
    for (auto& f : forms) {
      x.zero_grad();
      w.zero_grad();
      empty_cache();
      reset_peak_memory_stats();
      const int64_t base = memory_stats().current_bytes;
      auto t0 = std::chrono::steady_clock::now();
      Tensor y = f.fn();
      const double held = double(memory_stats().current_bytes - base) / (1 << 20);
      y.backward(ones_like(y));
      const double ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
      std::printf("| %s | %.1f | %.1f | %.1f |\n", f.name, held, double(memory_stats().peak_bytes - base) / (1 << 20), ms);
    }
  }
  return 0;
}
