// minigrad: the open convolution's vocabulary: dual numbers, the cf:: functions, the built-in
// combines and reductions, the options, and what the kernels of every backend share. The op is
// in ops/open_conv.h, which includes this; the CPU kernels are in ops/cpu/open_conv_kernels.h.
//
// The open convolution. Users put their own functions inside a conv:
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
#include <cmath>
#include <concepts>
#include <functional>
#include <limits>
#include <type_traits>

#include "../core/host_device.h"  // MG_HOST_DEVICE: the functors run on the GPU too
#include "cf_math.h"              // the scalar math of cf::, with vector forms
#include "conv.h"                 // Pair2, Padding2, Conv2dGeometry

namespace minigrad {

// A value with its derivatives with respect to the patch value x and the weight w.
template <class T>
struct Dual2 {
  T v{}, dx{}, dw{};
  constexpr Dual2() = default;
  // Dual2<T>(c), and so T(c) in a combine written over T, is the constant c: no derivatives.
  MG_HOST_DEVICE constexpr Dual2(T value) : v(value) {}
  MG_HOST_DEVICE constexpr Dual2(T value, T d_x, T d_w) : v(value), dx(d_x), dw(d_w) {}
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
// A combine may declare `static constexpr bool no_nan_from_finite = true` when finite x and w never
// give NaN (they may give an infinity): Max and Min then run with one compare a value instead of
// two on calls whose columns and weights are all finite (a NaN in them takes the NaN-aware kernels).
// The built-in combines below all declare it.
namespace combine {
struct Mul {  // the ordinary convolution: runs on the GEMM conv
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x * w; }
  static constexpr bool no_nan_from_finite = true;
};
struct L1 {  // -|x - w|, the exact gradient (sign)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::abs(x - w); }
  static constexpr bool no_nan_from_finite = true;
};
// AdderNet (Chen et al. 2020): forward -|x - w|; backward uses the full-precision gradient
// dW = x - w and the HardTanh-clipped dX = clamp(w - x, -1, 1) instead of the signs.
struct Adder {
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::abs(x - w); }
  template <class T> MG_HOST_DEVICE T dx(T x, T w) const { return cf::min(cf::max(w - x, T(-1)), T(1)); }
  template <class T> MG_HOST_DEVICE T dw(T x, T w) const { return x - w; }
  static constexpr bool no_nan_from_finite = true;
};
struct L2 {  // RBF / negative squared distance: -(x - w)^2 = (-x^2)(1) + (2x)(w) + (-1)(w^2)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::sq(x - w); }
  static constexpr int separable_terms = 3;
  template <class T> MG_HOST_DEVICE T f(int i, T x) const { return i == 0 ? -x * x : i == 1 ? T(2) * x : T(-1); }
  template <class T> MG_HOST_DEVICE T g(int i, T w) const { return i == 0 ? T(1) : i == 1 ? w : w * w; }
  static constexpr bool no_nan_from_finite = true;
};
struct Add {  // morphological dilation with Reduce::Max (x + w), erosion with Reduce::Min (x - w via Sub)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x + w; }
  static constexpr bool no_nan_from_finite = true;
};
struct Sub {
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x - w; }
  static constexpr bool no_nan_from_finite = true;
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

}  // namespace open_conv_detail
}  // namespace minigrad
