// minigrad: the open convolution's front end (the op open_conv2d, its three paths, autograd).
// The functor vocabulary (Dual2, cf::, combine::, reduce::, OpenConv2dOptions) is in
// ops/open_conv_vocab.h, the CPU's fused kernels in ops/cpu/open_conv_kernels.h; see
// docs/open-conv.md.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../core/autograd.h"
#include "../core/function.h"
#include "../core/parallel.h"
#include "conv.h"
#include "cpu/open_conv_kernels.h"
#include "open_conv_vocab.h"
#include "ops.h"

namespace minigrad {
namespace open_conv_detail {

// The fused kernels of one (combine, reduce, dtype) on CUDA. They are compiled by nvcc, so they
// come from a registry: the library registers the built-in combines with the built-in reductions,
// and a program registers its own with MG_CUDA_OPEN_CONV (ops/cuda/open_conv.cuh) in a .cu file.
// All tensors live on one CUDA device; cols (G*K, L), w (Cout, K), out / gy (Cout, L) contiguous.
struct CudaOpenConvKernels {
  void (*forward)(const void* comb, const Tensor& cols, const Tensor& w, const Tensor& out, const Plan& p) = nullptr;
  // dw (Cout, K) accumulated when defined; dcols (G*K, L) written when defined.
  void (*backward)(const void* comb, const Tensor& cols, const Tensor& w, const Tensor& gy, const Tensor& dw,
                   const Tensor& dcols, const Plan& p) = nullptr;
};
void register_cuda_open_conv(std::type_index combine, std::type_index reduce, DType dtype, CudaOpenConvKernels k);
const CudaOpenConvKernels* find_cuda_open_conv(std::type_index combine, std::type_index reduce, DType dtype);

// Non-template helpers (open_conv.cpp).
// The CUDA kernels of (Combine, Red) for x's dtype, or a clear error saying how to provide them.
const CudaOpenConvKernels& cuda_kernels_for(const Tensor& x, std::type_index combine, std::type_index reduce,
                                            bool builtin_reduction);
// Runs the patch hook on one tile of columns (rows, L), shown to it as (1, rows, L); checks that
// it kept the shape, dtype and device. Returns the hook's result (1, rows, L).
Tensor run_patch_hook(const TensorFn& patch, const Tensor& cols);
// out = alpha * a . b + beta * out on 2-D views (out with contiguous rows), through the backend.
void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta);
// Multiply + sum on one tile, by GEMM per group: out (Cout, L) = W_g (Og, K) . P_g (K, L).
void gemm_forward_tile(const Tensor& P, const Tensor& w, const Tensor& out, const Plan& p);
// Its backward: dW_g += gy_g . P_gᵀ (when dw is defined), dP_g = W_gᵀ . gy_g (when dP is).
void gemm_backward_tile(const Tensor& P, const Tensor& w, const Tensor& gy, const Tensor& dw, const Tensor& dP,
                        const Plan& p);
// True when every group's Og rows of w (Cout, ...) are equal.
bool rows_identical(const Tensor& w, int64_t groups);
// True when r (G, Cg, kh, kw) is the same for every channel c of each group.
bool same_over_channels(const Tensor& r);
// Samples the separable form against operator() and throws, naming the functor, if they differ.
void check_separable_sample(const std::string& name, double x, double w, double combined, double separated);

// Path 2, the separable combine: sum_k combine(c, w) = sum_i sum_k f_i(c) g_i(w), so each term is
// a GEMM G_i (Og, K) . F_i (K, L) per group on the same tile of columns as the fused kernel (the
// zero padding is then exact, and a patch hook applies unchanged). Three shortcuts, each checked
// on the actual values so they stay exact: a term whose f_i is constant on the tile adds
// f_i * rowsum(G_i) (no GEMM); a linear f_i = a x + b runs the GEMM on the columns themselves with
// alpha = a; a term whose g_i is constant and the same for every output channel of a group (RBF's
// -x^2 * 1) is one fused row sum per group.
struct SeparableTerm {
  Tensor G;          // g_i(W) (Cout, K)
  Tensor dG;         // its derivative g_i'(W), when W needs a gradient and g_i varies
  Tensor rowsum;     // sum_k G (Cout)
  bool row = false;  // g_i constant and equal across each group's rows
};

// Checks the declared separable form against operator() at a few points (once per call, in forward).
template <class C>
void check_separable_form(const C& comb) {
  const std::string name = autograd::detail::demangle(typeid(C).name());
  for (double xs : {-1.5, 0.25, 2.0})
    for (double ws : {-0.75, 0.5, 1.25}) {
      double sep = 0;
      for (int i = 0; i < C::separable_terms; ++i) sep += double(comb.f(i, xs)) * double(comb.g(i, ws));
      check_separable_sample(name, xs, ws, double(comb(xs, ws)), sep);
    }
}

// Evaluates every term's g_i on W. Forward and backward each build their own (a pass over W), so
// the tape keeps only x and W.
template <class T, class C>
std::vector<SeparableTerm> plan_separable(const C& comb, const Tensor& w, const Plan& p, bool need_dw) {
  const Tensor wc = w.detach().contiguous();
  const T* wp = wc.data_ptr<T>();
  const int64_t n = p.Cout * p.K;
  std::vector<SeparableTerm> terms;
  for (int i = 0; i < C::separable_terms; ++i) {
    SeparableTerm t;
    t.G = empty({p.Cout, p.K}, w.options());
    Tensor d = empty({p.Cout, p.K}, w.options());
    T *gp = t.G.data_ptr<T>(), *dp = d.data_ptr<T>();
    bool varies = false;
    for (int64_t j = 0; j < n; ++j) {
      const Dual2<T> r = comb.g(i, Dual2<T>{wp[j], T(1), T(0)});
      gp[j] = r.v;
      dp[j] = r.dx;
      varies = varies || r.dx != T(0);
    }
    if (varies && need_dw) t.dG = d;
    t.row = !varies && rows_identical(t.G, p.G);
    t.rowsum = sum(t.G, {1});
    terms.push_back(std::move(t));
  }
  return terms;
}

// How f_i behaves on one tile, checked on every value so the shortcuts stay exact:
// constant (f = b), linear (f = a x + b: the GEMM runs on the columns themselves), or general.
struct TileTerm {
  enum Kind { Constant, Linear, General } kind = General;
  double a = 0, b = 0;
};

// Calls fn(std::integral_constant<int, I>) for I < N, so comb.f(I, x) sees a constant term index
// and its branches fold away in the vectorised loops.
template <int N, class F>
void for_each_term(F&& fn) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (fn(std::integral_constant<int, I>{}), ...); }(
      std::make_integer_sequence<int, N>{});
}

template <int I, class T, class C>
TileTerm classify_tile(const C& comb, const T* src, int64_t n) {
  const Dual2<T> r0 = comb.f(I, Dual2<T>{src[0], T(1), T(0)});
  const T a = r0.dx, b = r0.v - a * src[0];
  auto fits = [&](T x) {
    const Dual2<T> r = comb.f(I, Dual2<T>{x, T(1), T(0)});
    return r.dx == a && r.v == a * x + b;
  };
  const int64_t head = std::min<int64_t>(n, 64);
  for (int64_t j = 0; j < head; ++j)  // most general terms show themselves at once
    if (!fits(src[j])) return {};
  std::atomic<bool> ok{true};
  parallel_for(head, n, kParallelGrain / 2, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1 && ok.load(std::memory_order_relaxed); ++j)
      if (!fits(src[j])) ok.store(false, std::memory_order_relaxed);
  });
  if (!ok.load()) return {};
  return {a == T(0) ? TileTerm::Constant : TileTerm::Linear, double(a), double(b)};
}

// Forward of a separable combine on one tile; kinds[i] receives how term i was run.
template <class T, class C>
void separable_forward_tile(const C& comb, const std::vector<SeparableTerm>& terms, const Tensor& src, const Tensor& F,
                            Tensor out, const Plan& p, TileTerm* kinds) {
  out.zero_();
  const int64_t rows = p.G * p.K, L = p.L, n = rows * L;
  for_each_term<C::separable_terms>([&](auto ic) {
    constexpr int i = decltype(ic)::value;
    const auto& t = terms[size_t(i)];
    const TileTerm tt = kinds[i] = classify_tile<i>(comb, src.data_ptr<T>(), n);
    if (tt.b != 0.0) out.add_(mul(t.rowsum, tt.b).view({p.Cout, 1}));  // b * sum_k G
    if (tt.kind == TileTerm::Constant) return;
    if (t.row) {  // one row r per group: out[o, q] += sum_k r[k] (f(src[k, q]) - b), fused
      const T a = T(tt.a), b = T(tt.b);
      const bool linear = tt.kind == TileTerm::Linear;
      for (int64_t g = 0; g < p.G; ++g) {
        const T* r = t.G.data_ptr<T>() + g * p.Og * p.K;
        const T* sg = src.data_ptr<T>() + g * p.K * L;
        T* o = out.data_ptr<T>() + g * p.Og * L;
        parallel_for(0, (L + 255) / 256, grain_for(p.K * 256), [&](int64_t b0, int64_t b1) {
        for (int64_t q0 = b0 * 256; q0 < std::min(L, b1 * 256); q0 += 256) {
          const int64_t q1 = std::min(L, q0 + 256);
          T acc[256] = {};
          for (int64_t k = 0; k < p.K; ++k) {
            const T rk = r[k];
            const T* sr = sg + k * L;
            if (linear)
              for (int64_t q = q0; q < q1; ++q) acc[q - q0] += rk * a * sr[q];
            else
              for (int64_t q = q0; q < q1; ++q) acc[q - q0] += rk * (T(comb.f(i, sr[q])) - b);
          }
          for (int64_t j = 0; j < p.Og; ++j)
            for (int64_t q = q0; q < q1; ++q) o[j * L + q] += acc[q - q0];
        }
        });
      }
      return;
    }
    Tensor M = src;  // the GEMM's right side: the columns themselves (linear), or f(src) - b
    double alpha = tt.a;
    if (tt.kind == TileTerm::General) {
      const T* s0 = src.data_ptr<T>();
      T* f = F.data_ptr<T>();
      const T b = T(tt.b);
      parallel_for(0, n, 1, [&](int64_t j0_, int64_t j1_) {
        for (int64_t j = j0_; j < j1_; ++j) f[j] = T(comb.f(i, s0[j])) - b;
      });
      M = F;
      alpha = 1.0;
    }
    for (int64_t g = 0; g < p.G; ++g)
      gemm_into(out.narrow(0, g * p.Og, p.Og), t.G.narrow(0, g * p.Og, p.Og), M.narrow(0, g * p.K, p.K), alpha, 1.0);
  });
}

// Backward on one tile: dGacc[i] (Cout, K) += gy . (f_i(src) - b)ᵀ for the terms with a W gradient;
// dsrc (rows, L) = sum_i f_i'(src) * G_iᵀ gy. kinds: from the forward, or null to classify again.
template <class T, class C>
void separable_backward_tile(const C& comb, const std::vector<SeparableTerm>& terms, const Tensor& src, const Tensor& gy,
                             std::vector<Tensor>& dGacc, Tensor dsrc, const Tensor& F, const Tensor& dF,
                             const Plan& p, const TileTerm* kinds) {
  const int64_t rows = p.G * p.K, L = p.L, n = rows * L;
  if (dsrc.defined()) dsrc.zero_();
  Tensor gsum;  // sum_q gy (Cout, 1), for the constant parts
  for_each_term<C::separable_terms>([&](auto ic) {
    constexpr int i = decltype(ic)::value;
    const auto& t = terms[size_t(i)];
    const TileTerm tt = kinds ? kinds[i] : classify_tile<i>(comb, src.data_ptr<T>(), n);
    if (t.dG.defined() && tt.b != 0.0) {  // d/dG of b * rowsum(G)
      if (!gsum.defined()) gsum = sum(gy, {1}, true);
      dGacc[size_t(i)].add_(mul(gsum, tt.b));
    }
    if (tt.kind == TileTerm::Constant) return;
    const bool general = tt.kind == TileTerm::General;
    // M = f(src) - b: the columns (scaled by a) when linear, else computed here with f' into dF.
    Tensor M = src;
    double alpha = tt.a;
    if (general && (t.dG.defined() || (dsrc.defined() && !t.row))) {
      const T* s0 = src.data_ptr<T>();
      T *f = F.data_ptr<T>(), *d = dF.data_ptr<T>();
      const T b = T(tt.b);
      parallel_for(0, n, 1, [&](int64_t j0_, int64_t j1_) {
        for (int64_t j = j0_; j < j1_; ++j) {
          const Dual2<T> r = comb.f(i, Dual2<T>{s0[j], T(1), T(0)});
          f[j] = r.v - b;
          d[j] = r.dx;
        }
      });
      M = F;
      alpha = 1.0;
    }
    if (t.dG.defined())
      for (int64_t g = 0; g < p.G; ++g)
        gemm_into(dGacc[size_t(i)].narrow(0, g * p.Og, p.Og), gy.narrow(0, g * p.Og, p.Og),
                  M.narrow(0, g * p.K, p.K).t(), alpha, 1.0);
    if (!dsrc.defined()) return;
    for (int64_t g = 0; g < p.G; ++g) {
      Tensor gyg = gy.narrow(0, g * p.Og, p.Og);
      T* o = dsrc.data_ptr<T>() + g * p.K * L;
      if (!t.row) {
        if (!general) {  // dsrc += a Gᵀ gy, straight from the GEMM
          gemm_into(dsrc.narrow(0, g * p.K, p.K), t.G.narrow(0, g * p.Og, p.Og).t(), gyg, tt.a, 1.0);
          continue;
        }
        Tensor up = mm(t.G.narrow(0, g * p.Og, p.Og).t(), gyg);  // (K, L)
        const T *u = up.data_ptr<T>(), *d = dF.data_ptr<T>() + g * p.K * L;
        const int64_t m = p.K * L;
        parallel_for(0, m, 1, [&](int64_t j0_, int64_t j1_) {
          for (int64_t j = j0_; j < j1_; ++j) o[j] += d[j] * u[j];
        });
        continue;
      }
      // dsrc[k, q] += f'(src[k, q]) r[k] s[q], s = the group's sum over outputs of gy
      Tensor sg = sum(gyg, {0});
      const T* sq = sg.data_ptr<T>();
      const T* r = t.G.data_ptr<T>() + g * p.Og * p.K;
      const T* s0 = src.data_ptr<T>() + g * p.K * L;
      const T a = T(tt.a);
      parallel_for(0, p.K, grain_for(L), [&](int64_t k0_, int64_t k1_) {
        for (int64_t k = k0_; k < k1_; ++k) {
          const T rk = r[k];
          const T* sr = s0 + k * L;
          T* ok = o + k * L;
          if (general)
            for (int64_t q = 0; q < L; ++q) ok[q] += comb.f(i, Dual2<T>{sr[q], T(1), T(0)}).dx * rk * sq[q];
          else
            for (int64_t q = 0; q < L; ++q) ok[q] += a * rk * sq[q];
        }
      });
    }
  });
}

// ---- separability detected from the functor itself (path 2 for combines that do not declare it).
// With pivot patch values xs_b and weights ws_b where the samples' matrix has full rank r,
// combine(x, w) = sum_b combine(x, ws_b) g_b(w), g_b(w) = sum_a ainv[b][a] combine(xs_a, w)
// (a skeleton of the sample matrix), when the functor is separable with r terms.
inline constexpr int kMaxDetectedTerms = 3;
struct SeparableSkeleton {
  int terms = -1;  // -1: no separable form found (or not verified)
  double xs[kMaxDetectedTerms] = {}, ws[kMaxDetectedTerms] = {};
  double ainv[kMaxDetectedTerms][kMaxDetectedTerms] = {};
};
// The combine in double: value and both derivatives at (x, w).
using CombineSampler = std::function<void(double x, double w, double& v, double& dx, double& dw)>;
// Samples c over [xlo, xhi] x [wlo, whi] (and x = 0, the padding), finds the rank by elimination
// with complete pivoting, builds the skeleton, and verifies value and derivatives at other points
// of the range and at the given data values; terms = -1 when anything disagrees.
SeparableSkeleton detect_separable_form(const CombineSampler& c, double xlo, double xhi, double wlo, double whi,
                                        const std::vector<double>& xdata, const std::vector<double>& wdata);

template <class T>
MG_HOST_DEVICE T constant_as(double v) {
  if constexpr (requires(T t) { t.dx; }) return T{decltype(T{}.v)(v)};
  else return T(v);
}

// A combine with the separable form detect_separable_form found, for path 2.
template <class C>
struct DetectedSeparable {
  C c;
  SeparableSkeleton s;
  static constexpr int separable_terms = kMaxDetectedTerms;  // the unused ones are 0 (skipped)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return c(x, w); }  // (host only)
  template <class T> T f(int i, T x) const { return i < s.terms ? T(c(x, constant_as<T>(s.ws[i]))) : T(0); }
  template <class T> T g(int i, T w) const {
    T acc = T(0);
    if (i < s.terms)
      for (int a = 0; a < s.terms; ++a) acc = acc + constant_as<T>(s.ainv[i][a]) * T(c(constant_as<T>(s.xs[a]), w));
    return acc;
  }
};

// Built-in combines known to have no separable form are not sampled.
template <class C>
constexpr bool known_not_separable = std::is_same_v<C, combine::L1> || std::is_same_v<C, combine::Adder>;
template <class C>
constexpr bool is_detected = false;
template <class C>
constexpr bool is_detected<DetectedSeparable<C>> = true;
template <class C>
constexpr bool detectable = !known_not_separable<C> && !HasOwnDerivatives<C, float> && !HasOwnDerivatives<C, double> &&
                            DualDifferentiable<C, float> && DualDifferentiable<C, double> &&
                            requires(const C c, double x) {
                              { c(x, x) } -> std::convertible_to<double>;
                            };

// The range and a few values of a tensor, for the detection's samples and checks.
void data_summary(const Tensor& t, double& lo, double& hi, std::vector<double>& some);

// The separable form open_conv2d uses for comb on this x and (hooked) w, if it looks for one and
// one holds; else terms = -1 and *why_not says why (explain_open_conv2d shows it).
template <class C>
SeparableSkeleton detected_form(const C& comb, const Tensor& x, const Tensor& w, const OpenConv2dOptions& o,
                                const char** why_not) {
  auto none = [why_not](const char* why) {
    *why_not = why;
    return SeparableSkeleton{};
  };
  if (x.device().is_cuda()) return none("CUDA");
  if constexpr (!detectable<C>) {
    return none(known_not_separable<C>
                    ? "a built-in combine without a separable form"
                    : "no separable form is looked for: the combine gives its own dx/dw or is not a template");
  } else {
    if (!o.detect_separable) return none("detect_separable is off");
    if (o.patch) return none("no separable form is looked for with a patch hook");
    if (x.numel() == 0 || w.numel() == 0) return none("an empty input or weight");
    double xlo, xhi, wlo, whi;
    std::vector<double> xs, ws;
    data_summary(x, xlo, xhi, xs);
    data_summary(w, wlo, whi, ws);
    const SeparableSkeleton sk = detect_separable_form(
        [&comb](double a, double b, double& v, double& dx, double& dw) {
          const Dual2<double> r = comb(Dual2<double>{a, 1.0, 0.0}, Dual2<double>{b, 0.0, 1.0});
          v = r.v;
          dx = r.dx;
          dw = r.dw;
        },
        xlo, xhi, wlo, whi, xs, ws);
    if (sk.terms < 0) *why_not = "no separable form with up to 3 terms holds on this data";
    return sk;
  }
}

// fn(v) - shift on every element of x, as an op: its gradient fn'(x) comes from dual numbers,
// recomputed from x in backward (the tape keeps x, which the caller holds anyway, not fn(x)).
template <class Fn>
Tensor map_dual(const Tensor& x, const Fn& fn, double shift) {
  const Tensor xc = x.detach().contiguous();
  Tensor out = empty(x.sizes(), x.options());
  const int64_t n = x.numel();
  visit_floating(x.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* s = xc.data_ptr<T>();
    T* d = out.data_ptr<T>();
    const T b = T(shift);
    parallel_for(0, n, kParallelGrain, [&](int64_t j0, int64_t j1) {
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) d[j] = T(fn(s[j])) - b;
    });
  });
  if (needs_grad(x)) {
    SavedTensor sx(x);
    record("open_conv2d", {x}, {out}, [sx, fn, n](std::vector<Tensor>& gr) {
      const Tensor xv = sx.unpack("open_conv2d").contiguous(), g = gr[0].contiguous();
      Tensor dx = empty(xv.sizes(), xv.options());
      visit_floating(xv.dtype(), "open_conv2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T *s = xv.data_ptr<T>(), *gp = g.data_ptr<T>();
        T* d = dx.data_ptr<T>();
        parallel_for(0, n, kParallelGrain, [&](int64_t j0, int64_t j1) {
#pragma omp simd
          for (int64_t j = j0; j < j1; ++j) d[j] = gp[j] * fn(Dual2<T>{s[j], T(1), T(0)}).dx;
        });
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

// s (N, G, H, W): for each group g of x's channels, sum_c fn(x[n, c, h, w]) - shift over its
// channels; backward dx = fn'(x) * ds of the channel's group (dual numbers, from x).
template <class Fn>
Tensor map_channel_sum(const Tensor& x, const Fn& fn, double shift, int64_t G) {
  const Tensor xc = x.detach().contiguous();
  const int64_t N = x.size(0), C = x.size(1), Cg = C / G, HW = x.size(2) * x.size(3);
  Tensor out = empty({N, G, x.size(2), x.size(3)}, x.options());
  constexpr int64_t B = 1024;  // positions per task
  const int64_t blocks = (HW + B - 1) / B;
  visit_floating(x.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* s = xc.data_ptr<T>();
    T* d = out.data_ptr<T>();
    const T b = T(shift);
    parallel_for(0, N * G * blocks, grain_for(Cg * B), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ng = t / blocks, q0 = (t % blocks) * B, q1 = std::min(HW, q0 + B);
        T* o = d + ng * HW;
        for (int64_t q = q0; q < q1; ++q) o[q] = T(0);
        for (int64_t c = 0; c < Cg; ++c) {
          const T* xr = s + (ng * Cg + c) * HW;
#pragma omp simd
          for (int64_t q = q0; q < q1; ++q) o[q] += T(fn(xr[q])) - b;
        }
      }
    });
  });
  if (needs_grad(x)) {
    SavedTensor sx(x);
    record("open_conv2d", {x}, {out}, [sx, fn, G](std::vector<Tensor>& gr) {
      const Tensor xv = sx.unpack("open_conv2d").contiguous(), g = gr[0].contiguous();
      const int64_t n = xv.size(0) * xv.size(1), Cg = xv.size(1) / G, HW = xv.size(2) * xv.size(3);
      Tensor dx = empty(xv.sizes(), xv.options());
      visit_floating(xv.dtype(), "open_conv2d", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T *s = xv.data_ptr<T>(), *gp = g.data_ptr<T>();
        T* d = dx.data_ptr<T>();
        parallel_for(0, n, grain_for(HW), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {  // row r = (image, channel): its group's gradient
            const T* gr_ = gp + (r / Cg) * HW;
#pragma omp simd
            for (int64_t q = 0; q < HW; ++q) d[r * HW + q] = gr_[q] * fn(Dual2<T>{s[r * HW + q], T(1), T(0)}).dx;
          }
        });
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

// Whether path 2 can run on the plain convolution (separable_conv below): on the CPU, without a
// patch hook, on a non-empty input, and where the padding is, with every f_i(0) finite (f_i(0)
// g_i(w) is the padding's part; a non-finite one takes the tile loop, which evaluates it).
template <class C>
bool separable_on_conv(const C& comb, const Tensor& x, const Conv2dGeometry& g, const OpenConv2dOptions& o) {
  if (o.patch || x.device().is_cuda() || x.numel() == 0) return false;
  if (g.pad_h == 0 && g.pad_w == 0) return true;
  bool finite = true;
  for_each_term<C::separable_terms>([&](auto ic) {
    const double f0 = double(comb.f(decltype(ic)::value, 0.0));
    finite = finite && std::isfinite(f0);
  });
  return finite;
}

// Path 2 on the plain convolution, with autograd from its ops: a term i with f_i not constant is
// conv2d(f_i(x) - b_i, g_i(W)), b_i = f_i(0) (so the zero padding stays exact), and the b_i parts
// add b_i * sum_k g_i(W) to every position. The shortcuts of the tile loop, checked on every value
// of x (and 0 where there is padding): a constant f_i adds only b_i * sum_k g_i(W); a linear
// f_i = a x + b convolves x itself with a g_i(W); a term whose g_i is constant with equal rows in
// each group (RBF's -x^2 * 1) is one conv with a single output channel per group, broadcast.
// No columns are kept (the conv picks its direct or tiled GEMM kernels); a general term's
// f_i(x) - b_i is a tensor of x's size, kept for dW's conv when W needs a gradient.
template <class C>
Tensor separable_conv(const C& comb, const Tensor& x, const Tensor& w, const Conv2dOptions& co,
                      const Conv2dGeometry& g) {
  const int64_t Cout = w.size(0), G = co.groups, Og = Cout / G, K = g.rows() / G;
  const bool padded = g.pad_h > 0 || g.pad_w > 0;
  const Tensor xd = x.detach().contiguous();
  Tensor y, shift;  // shift (Cout): sum_i b_i * sum_k g_i(W)
  std::vector<Tensor> per_group;  // the broadcast terms' (N, G, Ho, Wo)
  std::vector<std::pair<Tensor, Tensor>> convs;  // (input, weight) of the other terms
  visit_floating(x.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for_each_term<C::separable_terms>([&](auto ic) {
      constexpr int i = decltype(ic)::value;
      if constexpr (is_detected<C>) {
        if (i >= comb.s.terms) return;  // a detected form's unused terms are 0
      }
      TileTerm tt = classify_tile<i>(comb, xd.data_ptr<T>(), xd.numel());
      if (padded && tt.kind != TileTerm::General) {  // the line must hold at the padding's 0 too
        const Dual2<T> z = comb.f(i, Dual2<T>{T(0), T(1), T(0)});
        if (!(z.v == T(tt.b) && z.dx == T(tt.a))) tt = {};
      }
      if (tt.kind == TileTerm::General) tt.b = double(T(comb.f(i, T(0))));
      if (!padded && !std::isfinite(tt.b)) tt.b = 0.0;  // no padding: any shift is exact
      // G_i = g_i(W); `varies` unless g_i' is 0 on every weight (then Gc is the values, no node).
      const Tensor wd = w.detach().contiguous();
      Tensor Gc = empty(w.sizes(), w.options());
      bool varies = false;
      {
        const T* wp = wd.data_ptr<T>();
        T* gp = Gc.data_ptr<T>();
        const int64_t n = wd.numel();
        for (int64_t j = 0; j < n; ++j) {
          const Dual2<T> r = comb.g(i, Dual2<T>{wp[j], T(1), T(0)});
          gp[j] = r.v;
          varies = varies || r.dx != T(0);
        }
      }
      // (where W needs a gradient, through the op anyway: a g_i' of 0 gives W a zero gradient, as
      // torch's sign() does, not none)
      const Tensor Gi = varies || needs_grad(w) ? map_dual(w, [comb](auto v) { return comb.g(i, v); }, 0.0) : Gc;
      if (tt.b != 0.0) {
        Tensor part = mul(sum(Gi.view({Cout, -1}), {1}), tt.b);
        shift = shift.defined() ? add(shift, part) : part;
      }
      if (tt.kind == TileTerm::Constant) return;
      const bool linear = tt.kind == TileTerm::Linear;
      if (!varies && rows_identical(Gc, G)) {  // one output channel per group, broadcast to its Og
        Tensor r = Gc.view({G, Og, K}).select(1, 0).contiguous().view({G, w.size(1), w.size(2), w.size(3)});
        if (same_over_channels(r)) {  // (RBF's 1): the channels' sum first, then a one-channel conv
          const Tensor S = map_channel_sum(x, [comb](auto v) { return comb.f(i, v); }, tt.b, G);
          const Conv2dOptions cs{.stride = co.stride, .padding = co.padding, .dilation = co.dilation, .groups = G};
          per_group.push_back(conv2d(S, r.narrow(1, 0, 1).contiguous(), {}, cs));  // (N, G, Ho, Wo)
          return;
        }
        const Tensor F = linear ? x : map_dual(x, [comb](auto v) { return comb.f(i, v); }, tt.b);
        if (linear) r = mul(r, tt.a);
        per_group.push_back(conv2d(F, r, {}, co));  // (N, G, Ho, Wo)
        return;
      }
      const Tensor F = linear ? x : map_dual(x, [comb](auto v) { return comb.f(i, v); }, tt.b);
      convs.emplace_back(F, linear && tt.a != 1.0 ? mul(Gi, tt.a) : Gi);
    });
  });
  // The convs once the shift is known: it rides on the first as its bias (one output-sized
  // tensor fewer in forward and in backward).
  for (auto& [F, Wt] : convs) {
    Tensor term = conv2d(F, Wt, y.defined() ? Tensor() : shift, co);
    if (!y.defined()) shift = Tensor();
    y = y.defined() ? add(y, term) : term;
  }
  const int64_t N = x.size(0), L = g.Ho * g.Wo;
  if (!y.defined()) y = zeros({N, Cout, g.Ho, g.Wo}, x.options());
  for (const Tensor& s : per_group) y = add(y.view({N, G, Og, L}), s.view({N, G, 1, L})).view({N, Cout, g.Ho, g.Wo});
  return shift.defined() ? add(y, shift.view({1, Cout, 1, 1})) : y;
}

template <class Combine, class Red>
Tensor open_conv2d_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, const Combine& comb, const Red& red,
                        const OpenConv2dOptions& o) {
  constexpr bool kSum = std::is_same_v<Red, reduce::Sum>;
  constexpr bool kMul = std::is_same_v<Combine, combine::Mul>;
  if constexpr (!builtin_reduce<Red>) {
    if constexpr (!HasIdentity<Red>)
      MG_FAIL("open_conv2d: reduce functor ", autograd::detail::demangle(typeid(Red).name()),
              " has no identity; declare the value e with op(e, a) == a as `static constexpr double identity = e;` "
              "(0 for a sum, 1 for a product, -infinity for a max or log-sum-exp)");
  }
  const Conv2dOptions co{.stride = o.stride, .padding = o.padding, .dilation = o.dilation, .groups = o.groups};
  Tensor w = o.weight ? o.weight(weight) : weight;
  MG_CHECK(w.defined() && w.sizes() == weight.sizes(), "open_conv2d: the weight hook changed the weight's shape from ",
           weight.sizes(), " to ", w.defined() ? w.sizes() : Shape{});
  const Conv2dGeometry g = detail::conv2d_geometry("open_conv2d", x, w, bias, co);
  if constexpr (kSum && !kMul && !Separable<Combine> && detectable<Combine>) {
    const char* why_not = nullptr;
    const SeparableSkeleton sk = detected_form(comb, x, w, o, &why_not);
    if (sk.terms >= 0) {  // path 2 with the found form; W is already the weight hook's result
      OpenConv2dOptions o2 = o;
      o2.weight = nullptr;
      return open_conv2d_impl(x, w, bias, DetectedSeparable<Combine>{comb, sk}, red, o2);
    }
  }
  auto finish = [&](const Tensor& reduced) {
    Tensor y = o.output ? o.output(reduced) : reduced;
    return bias.defined() ? add(y, bias.view({1, -1, 1, 1})) : y;
  };
  if constexpr (kSum && kMul) {
    if (!o.patch) return finish(conv2d(x, w, {}, co));  // path 1: the GEMM convolution
  }
  if constexpr (kSum && !kMul && Separable<Combine>) {  // path 2 on the plain conv
    if (separable_on_conv(comb, x, g, o)) {
      if constexpr (!is_detected<Combine>) check_separable_form(comb);
      return finish(separable_conv(comb, x, w, co, g));
    }
  }
  // Paths 2 and 3 work through one image's columns at a time: a separable combine with Sum as a few
  // GEMMs per tile, anything else in the fused kernel (multiply + sum with a patch hook runs this
  // loop too, with one GEMM per tile).
  constexpr bool kSeparable = kSum && !kMul && Separable<Combine>;
  constexpr int C_terms = [] {
    if constexpr (kSeparable) return int(Combine::separable_terms);
    else return 0;
  }();
  auto kinds = std::make_shared<std::vector<TileTerm>>(size_t(x.size(0) * C_terms));
  // A declared form is checked against operator() at fixed points; a detected one was verified on
  // this call's data when it was found (and may hold there only: Huber on data where |x - w| < 1).
  if constexpr (kSeparable && !is_detected<Combine>) check_separable_form(comb);
  // On CUDA every combine but multiply + sum runs in the registered fused kernels (the separable
  // shortcuts classify tiles on the host, so they are CPU-only: same result, other route).
  const bool on_cuda = x.device().is_cuda();
  const CudaOpenConvKernels* ck = nullptr;
  if (on_cuda && !(kSum && kMul))
    ck = &cuda_kernels_for(x, typeid(Combine), typeid(Red), builtin_reduce<Red>);
  const bool separable = kSeparable && !on_cuda;
  Plan p{g, x.size(0), o.groups, w.size(0) / o.groups, g.rows() / o.groups, g.Ho * g.Wo, w.size(0)};
  Tensor xd = x.detach().contiguous(), wd = w.detach().contiguous();
  Tensor out = empty({p.N, p.Cout, g.Ho, g.Wo}, x.options());
  visit_floating(x.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    Backend& be = backend_for(x.device());
    Tensor cols = empty({g.rows(), p.L}, x.options());
    std::vector<SeparableTerm> terms;
    Tensor F;
    if constexpr (kSeparable) {
      if (separable) {
        terms = plan_separable<T>(comb, wd, p, false);
        F = empty({g.rows(), p.L}, x.options());
      }
    }
    for (int64_t n = 0; n < p.N; ++n) {
      be.im2col(cols, xd.narrow(0, n, 1), g);
      Tensor src = cols;
      if (o.patch) {
        NoGradGuard ng;
        src = run_patch_hook(o.patch, cols).view({g.rows(), p.L}).contiguous();
      }
      Tensor on = out.select(0, n).view({p.Cout, p.L});
      if constexpr (kSum && kMul) {
        gemm_forward_tile(src, wd, on, p);
      } else {
        if (ck) {
          ck->forward(&comb, src, wd.view({p.Cout, p.K}), on, p);
          continue;
        }
        if constexpr (kSeparable) separable_forward_tile<T>(comb, terms, src, F, on, p, kinds->data() + n * C_terms);
        else forward_image<T>(comb, red, src.template data_ptr<T>(), wd.data_ptr<T>(), on.data_ptr<T>(), p);
      }
    }
  });
  if (needs_grad(x, w)) {
    if constexpr (!differentiable<Combine>) {
      MG_FAIL("open_conv2d: combine functor ", autograd::detail::demangle(typeid(Combine).name()),
              " cannot be differentiated: make its operator() a template over the scalar type, or give it "
              "dx(x, w) and dw(x, w)");
    } else if constexpr (!builtin_reduce<Red> && !reduce_differentiable<Red>) {
      MG_FAIL("open_conv2d: reduce functor ", autograd::detail::demangle(typeid(Red).name()),
              " cannot be differentiated: make its operator() a template over the scalar type");
    } else {
      const bool gx = x.requires_grad(), gw = w.requires_grad();
      SavedTensor sx(x), sw(w);
      TensorFn patch = o.patch;
      record("open_conv2d", {x, w}, {out}, [=](std::vector<Tensor>& gr) {
        Tensor xv = sx.unpack("open_conv2d").contiguous(), wv = sw.unpack("open_conv2d").contiguous();
        Tensor gy = gr[0].contiguous();
        Tensor dx = gx ? zeros(xv.sizes(), xv.options()) : Tensor();
        Tensor dw = gw ? zeros(wv.sizes(), wv.options()) : Tensor();
        visit_floating(xv.dtype(), "open_conv2d", [&](auto tag) {
          using T = typename decltype(tag)::type;
          Backend& be = backend_for(xv.device());
          const int64_t rows = g.rows();
          Tensor cols = empty({rows, p.L}, xv.options());
          Tensor dsrc = empty({rows, p.L}, xv.options());
          Tensor win = !ck && (std::is_same_v<Red, reduce::Max> || std::is_same_v<Red, reduce::Min>)
                           ? empty({p.Cout * p.L / 2 + 1}, kInt64)  // int32 scratch
                           : Tensor();
          std::vector<SeparableTerm> terms;
          Tensor F, dF;
          std::vector<Tensor> dG;
          if constexpr (kSeparable) {
            if (separable) {
              terms = plan_separable<T>(comb, wv, p, gw);
              F = empty({rows, p.L}, xv.options());
              dF = empty({rows, p.L}, xv.options());
              for (const auto& t : terms) dG.push_back(t.dG.defined() ? zeros({p.Cout, p.K}, xv.options()) : Tensor());
            }
          }
          for (int64_t n = 0; n < p.N; ++n) {
            be.im2col(cols, xv.narrow(0, n, 1), g);
            Tensor src = cols, leaf, hooked;
            if (patch) {  // recompute this tile's hook with its graph, to backpropagate through it
              leaf = cols.view({1, rows, p.L}).detach();
              leaf.requires_grad_(gx);
              AutoGradMode on(true);
              hooked = run_patch_hook(patch, leaf);
              src = hooked.detach().view({rows, p.L}).contiguous();
            }
            const bool want_dsrc = gx || (hooked.defined() && hooked.requires_grad());
            Tensor gyn = gy.select(0, n).view({p.Cout, p.L});
            if constexpr (kSum && kMul) {
              gemm_backward_tile(src, wv, gyn, dw, want_dsrc ? dsrc : Tensor(), p);
            } else if (ck) {
              ck->backward(&comb, src, wv.view({p.Cout, p.K}), gyn, gw ? dw.view({p.Cout, p.K}) : Tensor(),
                           want_dsrc ? dsrc : Tensor(), p);
            } else if (separable) {
              // Without a patch hook the columns are the forward's, so its classification holds.
              if constexpr (kSeparable)
                separable_backward_tile<T>(comb, terms, src, gyn, dG, want_dsrc ? dsrc : Tensor(), F, dF, p,
                                           patch ? nullptr : kinds->data() + n * C_terms);
            } else {
              backward_image<T>(comb, red, src.template data_ptr<T>(), wv.data_ptr<T>(), gyn.data_ptr<T>(),
                                gw ? dw.data_ptr<T>() : nullptr, want_dsrc ? dsrc.data_ptr<T>() : nullptr,
                                win.defined() ? static_cast<int32_t*>(win.raw_data()) : nullptr, p);
            }
            Tensor dcols = dsrc;
            if (patch) {
              if (!hooked.requires_grad()) continue;  // the hook ignored its input and has no parameters
              backward({hooked}, {dsrc.view({1, rows, p.L})});
              if (!gx) continue;
              dcols = leaf.grad();
              if (!dcols.defined()) continue;
              dcols = dcols.view({rows, p.L}).contiguous();
            }
            if (gx) be.col2im(dx.narrow(0, n, 1), dcols, g);
          }
          for (size_t i = 0; i < dG.size(); ++i)  // dW = sum_i dL/dG_i * g_i'(W)
            if (dG[i].defined()) dw.view({p.Cout, p.K}).add_(mul(dG[i], terms[i].dG));
        });
        return std::vector<Tensor>{dx, dw};
      });
    }
  }
  return finish(out);
}

}  // namespace open_conv_detail

// x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout) or undefined. The reduction is
// options.reduce.
template <class Combine>
Tensor open_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Combine comb,
                   const OpenConv2dOptions& o = {}) {
  namespace d = open_conv_detail;
  switch (o.reduce) {
    case Reduce::Max: return d::open_conv2d_impl(x, weight, bias, comb, reduce::Max{}, o);
    case Reduce::Min: return d::open_conv2d_impl(x, weight, bias, comb, reduce::Min{}, o);
    case Reduce::Sum: break;
  }
  return d::open_conv2d_impl(x, weight, bias, comb, reduce::Sum{}, o);
}

// Which of the three paths (docs/open-conv.md) open_conv2d takes for these arguments, and why, in
// one line; a detected separable form is looked for on this data exactly as open_conv2d does.
template <class Combine>
std::string explain_open_conv2d(const Tensor& x, const Tensor& weight, Combine comb, const OpenConv2dOptions& o = {}) {
  namespace d = open_conv_detail;
  const bool sum = o.reduce == Reduce::Sum;
  if (sum && std::is_same_v<Combine, combine::Mul> && !o.patch) return "GEMM convolution (multiply + sum)";
  const Conv2dOptions co{.stride = o.stride, .padding = o.padding, .dilation = o.dilation, .groups = o.groups};
  const Conv2dGeometry g = detail::conv2d_geometry("open_conv2d", x, weight, {}, co);
  if constexpr (d::Separable<Combine>) {
    if (sum && !x.device().is_cuda())
      return "separable, declared: " + std::to_string(Combine::separable_terms) + " terms as " +
             (d::separable_on_conv(comb, x, g, o) ? "convolutions" : "GEMMs per tile");
  }
  if (!sum) return "fused kernel (the reduction is not a sum)";
  if (std::is_same_v<Combine, combine::Mul>) return "fused loop of one GEMM per tile (multiply + sum with a patch hook)";
  NoGradGuard ng;
  const Tensor w = o.weight ? o.weight(weight) : weight;
  const char* why_not = nullptr;
  const d::SeparableSkeleton sk = d::detected_form(comb, x, w, o, &why_not);
  if (sk.terms >= 0)
    return "separable, detected: " + std::to_string(sk.terms) + " terms as " +
           (d::separable_on_conv(d::DetectedSeparable<Combine>{comb, sk}, x, g, o) ? "convolutions" : "GEMMs per tile");
  return std::string("fused kernel (") + why_not + ")";
}

// The same with a user reduction functor (see reduce:: above); options.reduce must be left at Sum.
template <class Combine, class ReduceFn>
  requires(!std::is_convertible_v<ReduceFn, OpenConv2dOptions>)
Tensor open_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Combine comb, ReduceFn red,
                   const OpenConv2dOptions& o = {}) {
  MG_CHECK(o.reduce == Reduce::Sum, "open_conv2d: got a reduce functor and also options.reduce; give only one");
  return open_conv_detail::open_conv2d_impl(x, weight, bias, comb, red, o);
}

}  // namespace minigrad
