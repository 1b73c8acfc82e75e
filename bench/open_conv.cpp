// The open convolution against minigrad's plain conv of the same shape: forward+backward time and
// peak tensor memory (the allocator's counters). Usage: bench_open_conv [threads] [batch]
#include <minigrad/minigrad.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

using namespace minigrad;

namespace {
template <class F>
std::pair<double, double> measure(F&& step, int reps) {
  step();
  empty_cache();
  step();  // again after emptying the cache: the timed steps find their blocks cached, not fresh
           // pages from the OS (the first steps of a shape ran up to 2x slower, 3 reps missed it)
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


// The combines a researcher writes (issue 13): a branch, branches, a transcendental of x alone,
// a transcendental of a mixed term.
struct Huber {  // the README's: quadratic near zero, linear beyond 1
  template <class T> T operator()(T x, T w) const {
    T d = cf::abs(x - w);
    return d < T(1) ? T(-0.5) * d * d : T(0.5) - d;
  }
};
struct SoftThreshold {  // shrink x*w towards 0 by 0.1
  template <class T> T operator()(T x, T w) const {
    T t = x * w;
    return t > T(0.1) ? t - T(0.1) : t < T(-0.1) ? t + T(0.1) : T(0);
  }
};
struct WTanhX {  // w * tanh(x): separable, with a transcendental of x alone
  template <class T> T operator()(T x, T w) const { return w * cf::tanh(x); }
};
struct Gaussian {  // exp(-(x - w)^2 / 2): not separable
  template <class T> T operator()(T x, T w) const {
    T d = x - w;
    return cf::exp(T(-0.5) * d * d);
  }
};
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
    const double inv_k = 1.0 / double(l.C * 9);
    auto run = [&](auto comb, OpenConv2dOptions o) {
      o.padding = 1;
      return [&, comb, o] {
        x.zero_grad();
        w.zero_grad();
        Tensor y = open_conv2d(x, w, {}, comb, o);
        y.backward(ones_like(y));
      };
    };
    const OpenConv2dOptions hooks{.patch = [](const Tensor& c) { return mul(c, 0.5); },
                                  .weight = [](const Tensor& v) { return tanh(v); },
                                  .output = [inv_k](const Tensor& y) { return mul(y, inv_k); }};
    const int reps = N <= 16 ? 7 : 3;
    std::pair<double, double> plain = measure(run(combine::Mul{}, {}), reps), l1{};
    struct Row { const char* name; std::function<void()> step; bool vs_l1 = false; };
    std::vector<Row> rows{{"x*w, sum (plain conv)", {}},
                          {"-|x-w|, sum (AdderNet)", run(combine::L1{}, {})},
                          {"x+w, max (max-plus)", run(combine::Add{}, {.reduce = Reduce::Max})},
                          {"-(x-w)^2, sum (RBF, declared separable)", run(combine::L2{}, {})},
                          {"Huber(x-w) (a branch)", run(Huber{}, {})},
                          {"soft threshold of x*w (branches)", run(SoftThreshold{}, {})},
                          {"w*tanh(x) (transcendental of x)", run(WTanhX{}, {})},
                          {"exp(-(x-w)^2/2) (Gaussian)", run(Gaussian{}, {})},
                          {"-|x-w| with patch, weight, output hooks", run(combine::L1{}, hooks), true}};
    for (auto& row : rows) {
      auto r = row.step ? measure(row.step, reps) : plain;
      if (row.step == nullptr) r = plain;
      if (std::string(row.name).rfind("-|x-w|, sum", 0) == 0) l1 = r;
      std::printf("| %s | %s | %.1f | %.1f | %.2f | %.2f |", l.name, row.name, r.first * 1e3, r.second,
                  r.first / plain.first, r.second / plain.second);
      if (row.vs_l1) std::printf(" (%.2f x the same combine without hooks)", r.first / l1.first);
      std::printf("\n");
      std::fflush(stdout);
    }
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
