// minigrad: the open convolution. Users put their own functions inside a conv:
//
//   out[b, o, p] = output( reduce_k combine( cols[b, k, p], weight(W)[o, k] ) ) + bias[o]
//
// where cols = unfold(x), k runs over one group's patch elements and p over output positions.
// `combine` is a scalar functor inlined into a fused, multithreaded kernel that never builds the
// B x Cout x K x L broadcast: it works one image's columns at a time. Its derivatives come from
// dual numbers when operator() is a template over the scalar type, or from the functor's own
// dx(x, w) / dw(x, w), which also override the dual-number ones (e.g. AdderNet's clipped dX).
// Write the formula with minigrad::cf functions (cf::abs, cf::exp, ...) so it works on both.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <concepts>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../core/autograd.h"
#include "../core/function.h"
#include "../core/host_device.h"  // MG_HOST_DEVICE: the functors run on the GPU too
#include "../core/parallel.h"
#include "cf_math.h"  // the scalar math of cf::, with vector forms
#include "conv.h"
#include "ops.h"



namespace minigrad {

// A value with its derivatives with respect to the patch value x and the weight w.
template <class T>
struct Dual2 {
  T v{}, dx{}, dw{};  // T(c) gives the constant c: no derivatives
};
template <class T> MG_HOST_DEVICE Dual2<T> operator+(Dual2<T> a, Dual2<T> b) { return {a.v + b.v, a.dx + b.dx, a.dw + b.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator-(Dual2<T> a, Dual2<T> b) { return {a.v - b.v, a.dx - b.dx, a.dw - b.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator-(Dual2<T> a) { return {-a.v, -a.dx, -a.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator*(Dual2<T> a, Dual2<T> b) {
  return {a.v * b.v, a.dx * b.v + a.v * b.dx, a.dw * b.v + a.v * b.dw};
}
template <class T> MG_HOST_DEVICE Dual2<T> operator/(Dual2<T> a, Dual2<T> b) {
  return {a.v / b.v, (a.dx * b.v - a.v * b.dx) / (b.v * b.v), (a.dw * b.v - a.v * b.dw) / (b.v * b.v)};
}
template <class T> MG_HOST_DEVICE Dual2<T> operator+(Dual2<T> a, T c) { return {a.v + c, a.dx, a.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator+(T c, Dual2<T> a) { return a + c; }
template <class T> MG_HOST_DEVICE Dual2<T> operator-(Dual2<T> a, T c) { return {a.v - c, a.dx, a.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator-(T c, Dual2<T> a) { return {c - a.v, -a.dx, -a.dw}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator*(Dual2<T> a, T c) { return {a.v * c, a.dx * c, a.dw * c}; }
template <class T> MG_HOST_DEVICE Dual2<T> operator*(T c, Dual2<T> a) { return a * c; }
template <class T> MG_HOST_DEVICE Dual2<T> operator/(Dual2<T> a, T c) { return {a.v / c, a.dx / c, a.dw / c}; }
template <class T> MG_HOST_DEVICE bool operator<(Dual2<T> a, Dual2<T> b) { return a.v < b.v; }
template <class T> MG_HOST_DEVICE bool operator>(Dual2<T> a, Dual2<T> b) { return a.v > b.v; }

// Functions for combine functors: the same formula runs on float, double and Dual2. On float and
// double (and the values of Dual2) the transcendental ones are minigrad's (ops/cf_math.h): where
// GCC vectorises the kernel's loop on x86-64, they run as SLEEF vector functions (1.0 ulp) at the
// loop's vector width; elsewhere, and on the GPU, libm's / CUDA's.
namespace cf {
namespace detail {
#if defined(__CUDA_ARCH__)
#define MG_CF_SCALAR(name, fn)                                            \
  MG_HOST_DEVICE inline float name(float a) { return ::fn##f(a); }     \
  MG_HOST_DEVICE inline double name(double a) { return ::fn(a); }
#else
#define MG_CF_SCALAR(name, fn)                                            \
  MG_HOST_DEVICE inline float name(float a) { return ::mg_cf_##fn##f(a); } \
  MG_HOST_DEVICE inline double name(double a) { return ::mg_cf_##fn(a); }
#endif
MG_CF_SCALAR(exp_, exp)
MG_CF_SCALAR(log_, log)
MG_CF_SCALAR(tanh_, tanh)
MG_CF_SCALAR(sqrt_, sqrt)
#undef MG_CF_SCALAR
#if defined(__CUDA_ARCH__)
MG_HOST_DEVICE inline float pow_(float a, float p) { return ::powf(a, p); }
MG_HOST_DEVICE inline double pow_(double a, double p) { return ::pow(a, p); }
#else
MG_HOST_DEVICE inline float pow_(float a, float p) { return ::mg_cf_powf(a, p); }
MG_HOST_DEVICE inline double pow_(double a, double p) { return ::mg_cf_pow(a, p); }
#endif
// Other scalar types (long double, a user's): the standard library's.
template <class T> MG_HOST_DEVICE T exp_(T a) { return std::exp(a); }
template <class T> MG_HOST_DEVICE T log_(T a) { return std::log(a); }
template <class T> MG_HOST_DEVICE T tanh_(T a) { return std::tanh(a); }
template <class T> MG_HOST_DEVICE T sqrt_(T a) { return std::sqrt(a); }
template <class T> MG_HOST_DEVICE T pow_(T a, T p) { return std::pow(a, p); }
}  // namespace detail

// Branch-free: on real data the sign is a coin flip, and a branch per element mispredicts.
template <class T> MG_HOST_DEVICE T abs(T a) { return std::abs(a); }
template <class T> MG_HOST_DEVICE Dual2<T> abs(Dual2<T> a) {
  const T s = a.v < T(0) ? T(-1) : T(1);
  return {a.v * s, a.dx * s, a.dw * s};
}
template <class T> MG_HOST_DEVICE T sq(T a) { return a * a; }
template <class T> MG_HOST_DEVICE T exp(T a) { return detail::exp_(a); }
template <class T> MG_HOST_DEVICE Dual2<T> exp(Dual2<T> a) { T e = detail::exp_(a.v); return {e, e * a.dx, e * a.dw}; }
template <class T> MG_HOST_DEVICE T log(T a) { return detail::log_(a); }
template <class T> MG_HOST_DEVICE Dual2<T> log(Dual2<T> a) { return {detail::log_(a.v), a.dx / a.v, a.dw / a.v}; }
template <class T> MG_HOST_DEVICE T sqrt(T a) { return detail::sqrt_(a); }
template <class T> MG_HOST_DEVICE Dual2<T> sqrt(Dual2<T> a) { T s = detail::sqrt_(a.v); return {s, a.dx / (2 * s), a.dw / (2 * s)}; }
template <class T> MG_HOST_DEVICE T tanh(T a) { return detail::tanh_(a); }
template <class T> MG_HOST_DEVICE Dual2<T> tanh(Dual2<T> a) { T t = detail::tanh_(a.v); return {t, (1 - t * t) * a.dx, (1 - t * t) * a.dw}; }
// 1 / (1 + e^-a), through tanh (no overflow for large |a|): 0.5 tanh(a / 2) + 0.5
template <class T> MG_HOST_DEVICE T sigmoid(T a) { return T(0.5) * tanh(T(0.5) * a) + T(0.5); }
template <class T> MG_HOST_DEVICE T pow(T a, double p) { return detail::pow_(a, T(p)); }
template <class T> MG_HOST_DEVICE Dual2<T> pow(Dual2<T> a, double p) {
  T d = T(p) * detail::pow_(a.v, T(p - 1));
  return {detail::pow_(a.v, T(p)), d * a.dx, d * a.dw};
}
template <class T> MG_HOST_DEVICE T max(T a, T b) { return a < b ? b : a; }
template <class T> MG_HOST_DEVICE T min(T a, T b) { return b < a ? b : a; }
}  // namespace cf

// Built-in combines.
//
// A combine may also declare itself separable: combine(x, w) = sum_i f(i, x) * g(i, w) for
// i < separable_terms. With Reduce::Sum and no patch hook it then runs as a few GEMM
// convolutions instead of the fused kernel (see docs/open-conv.md). f and g must be templates:
// their derivatives come from dual numbers.
namespace combine {
struct Mul {  // the ordinary convolution: runs on the GEMM conv
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x * w; }
};
struct L1 {  // -|x - w|, the exact gradient (sign)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::abs(x - w); }
};
// AdderNet (Chen et al. 2020): forward -|x - w|; backward uses the full-precision gradient
// dW = x - w and the HardTanh-clipped dX = clamp(w - x, -1, 1) instead of the signs.
struct Adder {
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::abs(x - w); }
  template <class T> MG_HOST_DEVICE T dx(T x, T w) const { return cf::min(cf::max(w - x, T(-1)), T(1)); }
  template <class T> MG_HOST_DEVICE T dw(T x, T w) const { return x - w; }
};
struct L2 {  // RBF / negative squared distance: -(x - w)^2 = (-x^2)(1) + (2x)(w) + (-1)(w^2)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::sq(x - w); }
  static constexpr int separable_terms = 3;
  template <class T> MG_HOST_DEVICE T f(int i, T x) const { return i == 0 ? -x * x : i == 1 ? T(2) * x : T(-1); }
  template <class T> MG_HOST_DEVICE T g(int i, T w) const { return i == 0 ? T(1) : i == 1 ? w : w * w; }
};
struct Add {  // morphological dilation with Reduce::Max (x + w), erosion with Reduce::Min (x - w via Sub)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x + w; }
};
struct Sub {
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x - w; }
};
}  // namespace combine

// The built-in reductions over a patch. A user reduction is a functor with a template
// operator()(a, b) that is associative, and its identity as `static constexpr double identity`
// (the value e with op(e, a) == a), e.g. log-sum-exp with identity -infinity. Its gradient comes
// from dual numbers, so operator() must be a template over the scalar type.
enum class Reduce { Sum, Max, Min };
namespace reduce {
struct Sum {};
struct Max {};
struct Min {};
}  // namespace reduce

using TensorFn = std::function<Tensor(const Tensor&)>;

struct OpenConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  Reduce reduce = Reduce::Sum;  // the built-in reductions; a user functor is an argument instead
  // Differentiable tensor functions. Default: identity.
  //   patch:  on each tile of columns, shaped (1, Cin*kh*kw, L) as unfold() of one image gives;
  //           it must keep that shape and treat images independently. Run one tile at a time in
  //           forward and recomputed one tile at a time in backward.
  //   weight: on W before the conv.
  //   output: on the reduced result, before the bias.
  TensorFn patch;
  TensorFn weight;
  TensorFn output;
  // Look for a separable form of a combine that does not declare one (with Sum, no patch hook, and
  // no own dx/dw): sum_i f_i(x) g_i(w) with up to 3 terms, found by sampling the functor over the
  // data's range and verified there (see docs/open-conv.md). false: always the fused kernel.
  bool detect_separable = true;
};

namespace open_conv_detail {

template <class C, class T>
concept HasOwnDerivatives = requires(const C c, T x, T w) {
  { c.dx(x, w) } -> std::convertible_to<T>;
  { c.dw(x, w) } -> std::convertible_to<T>;
};
template <class C, class T>
concept DualDifferentiable = requires(const C c, Dual2<T> a) {
  { c(a, a) } -> std::same_as<Dual2<T>>;
};
template <class C>
constexpr bool differentiable = (HasOwnDerivatives<C, float> || DualDifferentiable<C, float>) &&
                                (HasOwnDerivatives<C, double> || DualDifferentiable<C, double>);

template <class R>
constexpr bool builtin_reduce =
    std::is_same_v<R, reduce::Sum> || std::is_same_v<R, reduce::Max> || std::is_same_v<R, reduce::Min>;
template <class R>
concept HasIdentity = requires {
  { R::identity } -> std::convertible_to<double>;
};
template <class R>
constexpr bool reduce_differentiable = DualDifferentiable<R, float> && DualDifferentiable<R, double>;
template <class T, class R>
T identity_of() {
  if constexpr (HasIdentity<R>) return T(R::identity);
  else return T(0);  // unreachable: open_conv2d refuses a reduce functor without an identity
}

template <class C, class T>
concept SeparableFor = requires(const C c, T x, Dual2<T> d) {
  { C::separable_terms } -> std::convertible_to<int>;
  { c.f(0, x) } -> std::convertible_to<T>;
  { c.g(0, x) } -> std::convertible_to<T>;
  { c.f(0, d) } -> std::same_as<Dual2<T>>;
  { c.g(0, d) } -> std::same_as<Dual2<T>>;
};
template <class C>
concept Separable = SeparableFor<C, float> && SeparableFor<C, double>;

// d combine / dx and d combine / dw at (x, w): the functor's own, else from dual numbers.
template <class T, class C>
MG_HOST_DEVICE inline void derivatives(const C& c, T x, T w, T& dx, T& dw) {
  if constexpr (HasOwnDerivatives<C, T>) {
    dx = T(c.dx(x, w));
    dw = T(c.dw(x, w));
  } else if constexpr (DualDifferentiable<C, T>) {
    Dual2<T> r = c(Dual2<T>{x, T(1), T(0)}, Dual2<T>{w, T(0), T(1)});
    dx = r.dx;
    dw = r.dw;
  } else {
    dx = dw = T(0);  // unreachable: open_conv2d refuses to record such a functor
  }
}

struct Plan {
  Conv2dGeometry g;
  int64_t N, G, Og, K, L, Cout;
};

// Max / Min over k of combine(cols[k, q], w[k]) for every position q of one output channel, into
// best (L). With Track, also the winning k into win (L). Forward and backward share this, so the
// gradient goes exactly to the k the forward chose (first winner on ties; NaN never wins).
template <bool Track, class T, class C>
void extreme_over_k(const C& comb, bool is_max, const T* cg, const T* wr, int64_t K, int64_t L, T* best,
                    int32_t* win) {
  const T id = is_max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
  for (int64_t q = 0; q < L; ++q) best[q] = id;
  if constexpr (Track)
    for (int64_t q = 0; q < L; ++q) win[q] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T wk = wr[k];
    const T* cr = cg + k * L;
    for (int64_t q = 0; q < L; ++q) {
      const T v = comb(cr[q], wk);
      const bool take = is_max ? v > best[q] : v < best[q];
      best[q] = take ? v : best[q];
      if constexpr (Track) win[q] = take ? int32_t(k) : win[q];
    }
  }
}

// Forward for one image: cols (G*K, L), w (Cout, K), out (Cout, L).
template <class T, class C, class R>
void forward_image(const C& comb, [[maybe_unused]] const R& red, const T* cols, const T* w, T* out, const Plan& p) {
  const int64_t K = p.K, L = p.L;
  parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
    for (int64_t o = o0_; o < o1_; ++o) {
      const T* cg = cols + (o / p.Og) * K * L;
      const T* wr = w + o * K;
      T* acc = out + o * L;
      if constexpr (std::is_same_v<R, reduce::Max> || std::is_same_v<R, reduce::Min>) {
        extreme_over_k<false>(comb, std::is_same_v<R, reduce::Max>, cg, wr, K, L, acc, nullptr);
      } else {
        const T id = std::is_same_v<R, reduce::Sum> ? T(0) : identity_of<T, R>();
        for (int64_t q = 0; q < L; ++q) acc[q] = id;
        for (int64_t k = 0; k < K; ++k) {
          const T wk = wr[k];
          const T* cr = cg + k * L;
          if constexpr (std::is_same_v<R, reduce::Sum>) {
            for (int64_t q = 0; q < L; ++q) acc[q] += comb(cr[q], wk);
          } else {
            for (int64_t q = 0; q < L; ++q) acc[q] = red(acc[q], comb(cr[q], wk));
          }
        }
      }
    }
  });
}

// Backward of a user reduction for one image. The gradient of r = v_0 (+) ... (+) v_{K-1} with
// respect to v_k is d/dt [ (prefix_{k-1} (+) t) (+) suffix_{k+1} ] at t = v_k, which needs only
// associativity: prefixes are stored for a chunk of positions, suffixes run backwards. Blocks of
// chunks of positions run in parallel, so dcols needs no atomics; each block keeps its own dw sums,
// added up in block order at the end.
template <class T, class C, class R>
void generic_backward_image(const C& comb, const R& red, const T* cols, const T* w, const T* gy, T* dw, T* dcols,
                            const Plan& p) {
  const int64_t K = p.K, L = p.L, rows = p.G * K;
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  const T id = identity_of<T, R>();
  if (dcols)
    for (int64_t i = 0; i < rows * L; ++i) dcols[i] = T(0);
  const bool par = p.Cout * K * L >= kParallelGrain;
  const int64_t blocks = par ? std::min<int64_t>(chunks, 2 * int64_t(get_num_threads())) : 1;
  std::vector<T> dw_blocks(dw ? size_t(blocks * p.Cout * K) : 0, T(0));
  parallel_chunks(blocks, [&](int64_t blk, int) {
    T* dw_local = dw ? dw_blocks.data() + blk * p.Cout * K : nullptr;
    std::vector<T> prefix(size_t(K * kChunk)), acc(kChunk), suffix(kChunk);
    for (int64_t c = chunks * blk / blocks; c < chunks * (blk + 1) / blocks; ++c) {
      const int64_t q0 = c * kChunk, n = std::min(kChunk, L - q0);
      for (int64_t o = 0; o < p.Cout; ++o) {
        const int64_t grp = o / p.Og;
        const T* cg = cols + grp * K * L + q0;
        const T* wr = w + o * K;
        const T* g = gy + o * L + q0;
        for (int64_t q = 0; q < n; ++q) acc[q] = id;
        for (int64_t k = 0; k < K; ++k)
          for (int64_t q = 0; q < n; ++q) {
            prefix[k * kChunk + q] = acc[q];
            acc[q] = red(acc[q], comb(cg[k * L + q], wr[k]));
          }
        for (int64_t q = 0; q < n; ++q) suffix[q] = id;
        for (int64_t k = K - 1; k >= 0; --k) {
          const T wk = wr[k];
          T sdw = 0;
          for (int64_t q = 0; q < n; ++q) {
            const T xv = cg[k * L + q], v = comb(xv, wk);
            const Dual2<T> r = red(red(Dual2<T>{prefix[k * kChunk + q], T(0), T(0)}, Dual2<T>{v, T(1), T(0)}),
                                   Dual2<T>{suffix[q], T(0), T(0)});
            const T gq = g[q] * r.dx;
            T ddx, ddw;
            derivatives(comb, xv, wk, ddx, ddw);
            if (dcols) dcols[(grp * K + k) * L + q0 + q] += gq * ddx;
            sdw += gq * ddw;
            suffix[q] = red(v, suffix[q]);
          }
          if (dw) dw_local[o * K + k] += sdw;
        }
      }
    }
  });
  // the blocks' sums in block order: the result does not depend on which thread ran which block
  if (dw)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t i = 0; i < p.Cout * K; ++i) dw[i] += dw_blocks[size_t(b * p.Cout * K + i)];
}

// Backward for one image. gy (Cout, L); dw (Cout, K) accumulated; dcols (G*K, L) written when
// not null; win (Cout, L) scratch for Max/Min, where the gradient goes to the winning k.
template <class T, class C, class R>
void backward_image(const C& comb, [[maybe_unused]] const R& red, const T* cols, const T* w, const T* gy, T* dw, T* dcols,
                    int32_t* win, const Plan& p) {
  const int64_t K = p.K, L = p.L, rows = p.G * K;
  if constexpr (!builtin_reduce<R>) {
    generic_backward_image<T>(comb, red, cols, w, gy, dw, dcols, p);
  } else if constexpr (std::is_same_v<R, reduce::Sum>) {
    if (dw) {
      parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
        for (int64_t o = o0_; o < o1_; ++o) {
          const T* cg = cols + (o / p.Og) * K * L;
          for (int64_t k = 0; k < K; ++k) {
            const T wk = w[o * K + k];
            const T* cr = cg + k * L;
            const T* g = gy + o * L;
            T s = 0;
#pragma omp simd reduction(+ : s)  // lets the sum be vectorised (reassociated) in this loop only
            for (int64_t q = 0; q < L; ++q) {
              T ddx, ddw;
              derivatives(comb, cr[q], wk, ddx, ddw);
              s += g[q] * ddw;
            }
            dw[o * K + k] += s;
          }
        }
      });
    }
    if (dcols) {
      parallel_for(0, rows, grain_for(p.Og * L), [&](int64_t r0_, int64_t r1_) {
        for (int64_t r = r0_; r < r1_; ++r) {  // each column row collects from its group's outputs
          const int64_t grp = r / K, k = r % K;
          const T* cr = cols + r * L;
          T* d = dcols + r * L;
          for (int64_t q = 0; q < L; ++q) d[q] = T(0);
          for (int64_t o = grp * p.Og; o < (grp + 1) * p.Og; ++o) {
            const T wk = w[o * K + k];
            const T* g = gy + o * L;
#pragma omp simd
            for (int64_t q = 0; q < L; ++q) {
              T ddx, ddw;
              derivatives(comb, cr[q], wk, ddx, ddw);
              d[q] += g[q] * ddx;
            }
          }
        }
      });
    }
  } else {
    // Max / Min: recompute which k won each (o, q), exactly as the forward did, then route the
    // gradient there.
    parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
      for (int64_t o = o0_; o < o1_; ++o) {
        const T* cg = cols + (o / p.Og) * K * L;
        int32_t* wi = win + o * L;
        std::vector<T> best(static_cast<size_t>(L));
        extreme_over_k<true>(comb, std::is_same_v<R, reduce::Max>, cg, w + o * K, K, L, best.data(), wi);
        if (dw) {
          const T* g = gy + o * L;
          for (int64_t q = 0; q < L; ++q) {
            const int64_t k = wi[q];
            T ddx, ddw;
            derivatives(comb, cg[k * L + q], w[o * K + k], ddx, ddw);
            dw[o * K + k] += g[q] * ddw;
          }
        }
      }
    });
    if (dcols) {
      for (int64_t i = 0; i < rows * L; ++i) dcols[i] = T(0);
      parallel_for(0, L, grain_for(p.Cout), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q)  // positions are independent
          for (int64_t o = 0; o < p.Cout; ++o) {
            const int64_t k = win[o * L + q], r = (o / p.Og) * K + k;
            T ddx, ddw;
            derivatives(comb, cols[r * L + q], w[o * K + k], ddx, ddw);
            dcols[r * L + q] += gy[o * L + q] * ddx;
          }
      });
    }
  }
}

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
  template <class T> T operator()(T x, T w) const { return c(x, w); }
  template <class T> T f(int i, T x) const { return i < s.terms ? T(c(x, constant_as<T>(s.ws[i]))) : T(0); }
  template <class T> T g(int i, T w) const {
    T acc = T(0);
    if (i < s.terms)
      for (int a = 0; a < s.terms; ++a) acc = acc + constant_as<T>(s.ainv[i][a]) * T(c(constant_as<T>(s.xs[a]), w));
    return acc;
  }
};

template <class C>
constexpr bool detectable = !HasOwnDerivatives<C, float> && !HasOwnDerivatives<C, double> &&
                            DualDifferentiable<C, float> && DualDifferentiable<C, double> &&
                            requires(const C c, double x) {
                              { c(x, x) } -> std::convertible_to<double>;
                            };

// The range and a few values of a tensor, for the detection's samples and checks.
void data_summary(const Tensor& t, double& lo, double& hi, std::vector<double>& some);

template <class C>
SeparableSkeleton detect_for(const C& comb, const Tensor& x, const Tensor& w) {
  double xlo, xhi, wlo, whi;
  std::vector<double> xs, ws;
  data_summary(x, xlo, xhi, xs);
  data_summary(w, wlo, whi, ws);
  return detect_separable_form(
      [&comb](double a, double b, double& v, double& dx, double& dw) {
        const Dual2<double> r = comb(Dual2<double>{a, 1.0, 0.0}, Dual2<double>{b, 0.0, 1.0});
        v = r.v;
        dx = r.dx;
        dw = r.dw;
      },
      xlo, xhi, wlo, whi, xs, ws);
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
    if (o.detect_separable && !o.patch && !x.device().is_cuda() && x.numel() > 0 && w.numel() > 0) {
      const SeparableSkeleton sk = detect_for(comb, x, w);
      if (sk.terms >= 0) {  // path 2 with the found form; W is already the weight hook's result
        OpenConv2dOptions o2 = o;
        o2.weight = nullptr;
        return open_conv2d_impl(x, w, bias, DetectedSeparable<Combine>{comb, sk}, red, o2);
      }
    }
  }
  auto finish = [&](const Tensor& reduced) {
    Tensor y = o.output ? o.output(reduced) : reduced;
    return bias.defined() ? add(y, bias.view({1, -1, 1, 1})) : y;
  };
  if constexpr (kSum && kMul) {
    if (!o.patch) return finish(conv2d(x, w, {}, co));  // path 1: the GEMM convolution
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
  if constexpr (kSeparable) check_separable_form(comb);
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
  if constexpr (d::Separable<Combine>) {
    if (sum && !x.device().is_cuda())
      return "separable, declared: " + std::to_string(Combine::separable_terms) + " terms as GEMMs per tile";
  }
  if (!sum) return "fused kernel (the reduction is not a sum)";
  if (std::is_same_v<Combine, combine::Mul>) return "fused loop of one GEMM per tile (multiply + sum with a patch hook)";
  if (x.device().is_cuda()) return "fused kernel (CUDA)";
  if constexpr (!d::detectable<Combine>) {
    return "fused kernel (no separable form is looked for: the combine gives its own dx/dw or is not a template)";
  } else {
    if (!o.detect_separable) return "fused kernel (detect_separable is off)";
    if (o.patch) return "fused kernel (no separable form is looked for with a patch hook)";
    NoGradGuard ng;
    const Tensor w = o.weight ? o.weight(weight) : weight;
    const d::SeparableSkeleton sk = d::detect_for(comb, x, w);
    if (sk.terms >= 0) return "separable, detected: " + std::to_string(sk.terms) + " terms as GEMMs per tile";
    return "fused kernel (no separable form with up to 3 terms holds on this data)";
  }
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
