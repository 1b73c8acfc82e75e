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
#include <cmath>
#include <concepts>
#include <functional>
#include <limits>
#include <string>
#include <typeinfo>

#include "../core/autograd.h"
#include "../core/function.h"
#include "../core/threading.h"
#include "conv.h"
#include "ops.h"

#ifndef MG_HOST_DEVICE
#define MG_HOST_DEVICE  // becomes __host__ __device__ once the CUDA backend compiles these functors
#endif

namespace minigrad {

// A value with its derivatives with respect to the patch value x and the weight w.
template <class T>
struct Dual2 {
  T v, dx, dw;
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

// Functions for combine functors: the same formula runs on float, double and Dual2.
namespace cf {
// Branch-free: on real data the sign is a coin flip, and a branch per element mispredicts.
template <class T> MG_HOST_DEVICE T abs(T a) { return std::abs(a); }
template <class T> MG_HOST_DEVICE Dual2<T> abs(Dual2<T> a) {
  const T s = a.v < T(0) ? T(-1) : T(1);
  return {a.v * s, a.dx * s, a.dw * s};
}
template <class T> MG_HOST_DEVICE T sq(T a) { return a * a; }
template <class T> MG_HOST_DEVICE T exp(T a) { return std::exp(a); }
template <class T> MG_HOST_DEVICE Dual2<T> exp(Dual2<T> a) { T e = std::exp(a.v); return {e, e * a.dx, e * a.dw}; }
template <class T> MG_HOST_DEVICE T log(T a) { return std::log(a); }
template <class T> MG_HOST_DEVICE Dual2<T> log(Dual2<T> a) { return {std::log(a.v), a.dx / a.v, a.dw / a.v}; }
template <class T> MG_HOST_DEVICE T sqrt(T a) { return std::sqrt(a); }
template <class T> MG_HOST_DEVICE Dual2<T> sqrt(Dual2<T> a) { T s = std::sqrt(a.v); return {s, a.dx / (2 * s), a.dw / (2 * s)}; }
template <class T> MG_HOST_DEVICE T tanh(T a) { return std::tanh(a); }
template <class T> MG_HOST_DEVICE Dual2<T> tanh(Dual2<T> a) { T t = std::tanh(a.v); return {t, (1 - t * t) * a.dx, (1 - t * t) * a.dw}; }
template <class T> MG_HOST_DEVICE T pow(T a, double p) { return std::pow(a, T(p)); }
template <class T> MG_HOST_DEVICE Dual2<T> pow(Dual2<T> a, double p) {
  T d = T(p) * std::pow(a.v, T(p - 1));
  return {std::pow(a.v, T(p)), d * a.dx, d * a.dw};
}
template <class T> MG_HOST_DEVICE T max(T a, T b) { return a < b ? b : a; }
template <class T> MG_HOST_DEVICE T min(T a, T b) { return b < a ? b : a; }
}  // namespace cf

// Built-in combines.
namespace combine {
struct Mul {  // the ordinary convolution: runs on the GEMM conv
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x * w; }
};
struct L1 {  // AdderNet: -|x - w|
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::abs(x - w); }
};
struct L2 {  // RBF / negative squared distance: -(x - w)^2
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return -cf::sq(x - w); }
};
struct Add {  // morphological dilation with Reduce::Max (x + w), erosion with Reduce::Min (x - w via Sub)
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x + w; }
};
struct Sub {
  template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { return x - w; }
};
}  // namespace combine

enum class Reduce { Sum, Max, Min };

struct OpenConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  Reduce reduce = Reduce::Sum;
  // Differentiable tensor functions on the weight (before the conv) and on the reduced result
  // (before the bias). Defaults: identity.
  std::function<Tensor(const Tensor&)> weight;
  std::function<Tensor(const Tensor&)> output;
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

// d combine / dx and d combine / dw at (x, w): the functor's own, else from dual numbers.
template <class T, class C>
inline void derivatives(const C& c, T x, T w, T& dx, T& dw) {
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
template <class T, class C>
void forward_image(const C& comb, Reduce red, const T* cols, const T* w, T* out, const Plan& p) {
  const int64_t K = p.K, L = p.L;
#pragma omp parallel for schedule(static) if (p.Cout * K * L >= kParallelGrain)
  for (int64_t o = 0; o < p.Cout; ++o) {
    const T* cg = cols + (o / p.Og) * K * L;
    const T* wr = w + o * K;
    T* acc = out + o * L;
    if (red != Reduce::Sum) {
      extreme_over_k<false>(comb, red == Reduce::Max, cg, wr, K, L, acc, nullptr);
      continue;
    }
    for (int64_t q = 0; q < L; ++q) acc[q] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T wk = wr[k];
      const T* cr = cg + k * L;
      for (int64_t q = 0; q < L; ++q) acc[q] += comb(cr[q], wk);
    }
  }
}

// Backward for one image. gy (Cout, L); dw (Cout, K) accumulated; dcols (G*K, L) written when
// not null; win (Cout, L) scratch for Max/Min, where the gradient goes to the winning k.
template <class T, class C>
void backward_image(const C& comb, Reduce red, const T* cols, const T* w, const T* gy, T* dw, T* dcols,
                    int32_t* win, const Plan& p) {
  const int64_t K = p.K, L = p.L, rows = p.G * K;
  const bool par = p.Cout * K * L >= kParallelGrain;
  if (red == Reduce::Sum) {
    if (dw) {
#pragma omp parallel for schedule(static) if (par)
      for (int64_t o = 0; o < p.Cout; ++o) {
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
    }
    if (dcols) {
#pragma omp parallel for schedule(static) if (par)
      for (int64_t r = 0; r < rows; ++r) {  // each column row collects from its group's outputs
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
    }
    return;
  }
  // Max / Min: recompute which k won each (o, q), exactly as the forward did, then route the
  // gradient there.
#pragma omp parallel for schedule(static) if (par)
  for (int64_t o = 0; o < p.Cout; ++o) {
    const T* cg = cols + (o / p.Og) * K * L;
    int32_t* wi = win + o * L;
    std::vector<T> best(static_cast<size_t>(L));
    extreme_over_k<true>(comb, red == Reduce::Max, cg, w + o * K, K, L, best.data(), wi);
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
  if (dcols) {
    for (int64_t i = 0; i < rows * L; ++i) dcols[i] = T(0);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t q = 0; q < L; ++q)  // positions are independent
      for (int64_t o = 0; o < p.Cout; ++o) {
        const int64_t k = win[o * L + q], r = (o / p.Og) * K + k;
        T ddx, ddw;
        derivatives(comb, cols[r * L + q], w[o * K + k], ddx, ddw);
        dcols[r * L + q] += gy[o * L + q] * ddx;
      }
  }
}

void check_cpu(const Tensor& x);

}  // namespace open_conv_detail

// x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout) or undefined.
template <class Combine>
Tensor open_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Combine comb,
                   const OpenConv2dOptions& o = {}) {
  namespace d = open_conv_detail;
  const Conv2dOptions co{.stride = o.stride, .padding = o.padding, .dilation = o.dilation, .groups = o.groups};
  Tensor w = o.weight ? o.weight(weight) : weight;
  MG_CHECK(w.defined() && w.sizes() == weight.sizes(), "open_conv2d: the weight hook changed the weight's shape from ",
           weight.sizes(), " to ", w.defined() ? w.sizes() : Shape{});
  const Conv2dGeometry g = detail::conv2d_geometry("open_conv2d", x, w, bias, co);
  auto finish = [&](const Tensor& reduced) {
    Tensor y = o.output ? o.output(reduced) : reduced;
    return bias.defined() ? add(y, bias.view({1, -1, 1, 1})) : y;
  };
  if constexpr (std::is_same_v<Combine, combine::Mul>) {
    if (o.reduce == Reduce::Sum) return finish(conv2d(x, w, {}, co));  // path 1: the GEMM convolution
  }
  d::check_cpu(x);
  d::Plan p{g, x.size(0), o.groups, w.size(0) / o.groups, g.rows() / o.groups, g.Ho * g.Wo, w.size(0)};
  Tensor xd = x.detach().contiguous(), wd = w.detach().contiguous();
  Tensor out = empty({p.N, p.Cout, g.Ho, g.Wo}, x.options());
  const Reduce red = o.reduce;
  visit_floating(x.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor cols = empty({g.rows(), p.L}, x.options());
    for (int64_t n = 0; n < p.N; ++n) {
      backend_for(x.device()).im2col(cols, xd.narrow(0, n, 1), g);
      d::forward_image<T>(comb, red, cols.data_ptr<T>(), wd.data_ptr<T>(), out.data_ptr<T>() + n * p.Cout * p.L, p);
    }
  });
  if (needs_grad(x, w)) {
    if constexpr (!d::differentiable<Combine>) {
      MG_FAIL("open_conv2d: combine functor ", autograd::detail::demangle(typeid(Combine).name()),
              " cannot be differentiated: make its operator() a template over the scalar type, or give it "
              "dx(x, w) and dw(x, w)");
    } else {
      const bool gx = x.requires_grad(), gw = w.requires_grad();
      SavedTensor sx(x), sw(w);
      record("open_conv2d", {x, w}, {out}, [=](std::vector<Tensor>& gr) {
        Tensor xv = sx.unpack("open_conv2d").contiguous(), wv = sw.unpack("open_conv2d").contiguous();
        Tensor gy = gr[0].contiguous();
        Tensor dx = gx ? empty(xv.sizes(), xv.options()) : Tensor();
        Tensor dw = gw ? zeros(wv.sizes(), wv.options()) : Tensor();
        visit_floating(xv.dtype(), "open_conv2d", [&](auto tag) {
          using T = typename decltype(tag)::type;
          Backend& be = backend_for(xv.device());
          Tensor cols = empty({g.rows(), p.L}, xv.options());
          Tensor dcols = gx ? empty({g.rows(), p.L}, xv.options()) : Tensor();
          Tensor win = red == Reduce::Sum ? Tensor() : empty({p.Cout * p.L / 2 + 1}, kInt64);  // int32 scratch
          for (int64_t n = 0; n < p.N; ++n) {
            be.im2col(cols, xv.narrow(0, n, 1), g);
            d::backward_image<T>(comb, red, cols.data_ptr<T>(), wv.data_ptr<T>(), gy.data_ptr<T>() + n * p.Cout * p.L,
                                 gw ? dw.data_ptr<T>() : nullptr, gx ? dcols.data_ptr<T>() : nullptr,
                                 win.defined() ? static_cast<int32_t*>(win.raw_data()) : nullptr, p);
            if (gx) be.col2im(dx.narrow(0, n, 1), dcols, g);
          }
        });
        return std::vector<Tensor>{dx, dw};
      });
    }
  }
  return finish(out);
}

}  // namespace minigrad
