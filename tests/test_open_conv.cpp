// The open convolution against a literal unfold-and-broadcast reference written in minigrad ops.
#include <functional>

#include "helpers.h"

using namespace mgtest;

namespace {

struct Cfg {
  int64_t N, C, H, W, Cout, k;
  Pair2 stride, padding, dilation;
  int64_t groups;
};
const std::vector<Cfg> kCases = {
    {2, 3, 6, 5, 4, 3, 1, 0, 1, 1},
    {2, 4, 7, 6, 4, 3, {2, 1}, 1, 1, 2},
    {1, 2, 8, 8, 2, 3, 1, 2, 2, 1},
};

using TensorCombine = std::function<Tensor(const Tensor&, const Tensor&)>;
using TensorReduce = std::function<Tensor(const Tensor&)>;  // reduces dim 2 of (N, Og, K, L)

TensorReduce builtin(Reduce red) {
  return [red](const Tensor& v) {
    return red == Reduce::Sum ? sum(v, {2}) : std::get<0>(red == Reduce::Max ? max(v, 2) : min(v, 2));
  };
}

// out[b, o, p] = reduce_k combine(patch(cols)[b, k, p], w[o, k]), building the full broadcast tensor.
Tensor reference(const Tensor& x, const Tensor& w, const Cfg& c, const TensorCombine& comb, const TensorReduce& red,
                 const TensorFn& patch = {}) {
  Tensor cols = unfold(x, {.kernel_size = c.k, .stride = c.stride, .padding = c.padding, .dilation = c.dilation});
  if (patch) cols = patch(cols);
  const int64_t G = c.groups, Og = c.Cout / G, K = cols.size(1) / G, L = cols.size(2);
  std::vector<Tensor> parts;
  for (int64_t g = 0; g < G; ++g) {
    Tensor cg = cols.narrow(1, g * K, K).unsqueeze(1);                       // (N, 1, K, L)
    Tensor wg = w.narrow(0, g * Og, Og).reshape({1, Og, K, 1});             // (1, Og, K, 1)
    Tensor v = comb(cg, wg);                                                 // (N, Og, K, L)
    parts.push_back(red(v));
  }
  // Concatenate the groups along dim 1, differentiably: each part goes to channels
  // [g*Og, (g+1)*Og) through a matmul with a 0/1 placement matrix, and the placed parts are summed.
  Tensor out;
  for (int64_t g = 0; g < G; ++g) {
    Tensor part = parts[size_t(g)];
    Tensor place = zeros({c.Cout, Og}, x.options());
    {
      NoGradGuard ng;
      for (int64_t i = 0; i < Og; ++i) place[g * Og + i][i].fill_(1.0);
    }
    Tensor placed = matmul(place, part);  // (N, Cout, L)
    out = out.defined() ? add(out, placed) : placed;
  }
  const int64_t Ho = (c.H + 2 * c.padding.h - c.dilation.h * (c.k - 1) - 1) / c.stride.h + 1;
  const int64_t Wo = (c.W + 2 * c.padding.w - c.dilation.w * (c.k - 1) - 1) / c.stride.w + 1;
  return out.reshape({x.size(0), c.Cout, Ho, Wo});
}

struct Case {
  const char* name;
  TensorCombine ops;
  Reduce red;
};

using Run = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const OpenConv2dOptions&)>;

// Runs `run` on every case (stride, padding, dilation, groups) and checks values, gradients
// against autograd through the broadcast reference, and finite differences.
// finite_differences = false leaves the last check out, for shapes too large for it.
void check_case(const char* name, const Run& run, const TensorCombine& ops, const TensorReduce& red,
                OpenConv2dOptions base = {}, const std::vector<Cfg>& cases = kCases, bool finite_differences = true) {
  for_each_device([&](Device dev) {
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Cfg& c = cases[ci];
    const std::string label = name;
    CAPTURE(label);
    CAPTURE(ci);
    Tensor x = leaf({c.N, c.C, c.H, c.W}, dev), w = leaf({c.Cout, c.C / c.groups, c.k, c.k}, dev),
           b = leaf({c.Cout}, dev);
    OpenConv2dOptions o = base;
    o.stride = c.stride, o.padding = c.padding, o.dilation = c.dilation, o.groups = c.groups;
    Tensor y = run(x, w, b, o);
    Tensor want = add(reference(x, w, c, ops, red, o.patch), b.view({1, -1, 1, 1}));
    check_close(vals(y), vals(want), 1e-12);
    // gradients: the fused kernel's against autograd through the reference
    sum(mul(y, want.detach())).backward();
    Tensor gx = x.grad(), gw = w.grad(), gb = b.grad();
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    sum(mul(want, want.detach())).backward();
    check_close(vals(gx), vals(x.grad()), 1e-10);
    check_close(vals(gw), vals(w.grad()), 1e-10);
    check_close(vals(gb), vals(b.grad()), 1e-10);
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    if (finite_differences)
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return run(in[0], in[1], in[2], o); }, x, w, b);
  }
  });
}

template <class Comb>
void check_against_reference(const char* name, Comb comb, const TensorCombine& ops, Reduce red,
                             const std::vector<Cfg>& cases = kCases, bool detect = true,
                             bool finite_differences = true) {
  check_case(name, [comb](const Tensor& x, const Tensor& w, const Tensor& b, const OpenConv2dOptions& o) {
    return open_conv2d(x, w, b, comb, o);
  }, ops, builtin(red), {.reduce = red, .detect_separable = detect}, cases, finite_differences);
}

}  // namespace

TEST_CASE("open_conv2d: built-in combines and reduces match unfold-and-broadcast") {
  auto mul_ops = [](const Tensor& a, const Tensor& b) { return mul(a, b); };
  check_against_reference("Mul+Sum (GEMM path)", combine::Mul{}, mul_ops, Reduce::Sum);
  check_against_reference("Mul+Max (fused)", combine::Mul{}, mul_ops, Reduce::Max);
  check_against_reference("L1 (AdderNet)", combine::L1{}, [](const Tensor& a, const Tensor& b) { return neg(abs(sub(a, b))); }, Reduce::Sum);
  check_against_reference("L2 (RBF)", combine::L2{}, [](const Tensor& a, const Tensor& b) { Tensor d = sub(a, b); return neg(mul(d, d)); }, Reduce::Sum);
  check_against_reference("dilation (x+w, max)", combine::Add{}, [](const Tensor& a, const Tensor& b) { return add(a, b); }, Reduce::Max);
  check_against_reference("erosion (x-w, min)", combine::Sub{}, [](const Tensor& a, const Tensor& b) { return sub(a, b); }, Reduce::Min);
}

namespace {
// A user combine written once, as a template: minigrad derives its derivatives with dual numbers.
struct Huber {
  template <class T>
  T operator()(T x, T w) const {
    T d = cf::abs(x - w);
    return d < T(1) ? T(-0.5) * d * d : T(0.5) - d;
  }
};
// A non-template combine with its own derivatives.
struct ScaledProduct {
  float operator()(float x, float w) const { return 3 * x * w; }
  double operator()(double x, double w) const { return 3 * x * w; }
  double dx(double, double w) const { return 3 * w; }
  double dw(double x, double) const { return 3 * x; }
};
// One without derivatives: usable without gradients only.
struct NoDerivatives {
  double operator()(double x, double w) const { return x * w + 1; }
};
// AdderNet's gradients: the forward is -|x-w|, dX is HardTanh(w - x) and dW is the full-precision
// (x - w), not the sign the true derivative would give.
struct Adder {
  template <class T>
  T operator()(T x, T w) const { return -cf::abs(x - w); }
  template <class T>
  T dx(T x, T w) const { return std::clamp(w - x, T(-1), T(1)); }
  template <class T>
  T dw(T x, T w) const { return x - w; }
};
}  // namespace

TEST_CASE("open_conv2d: user combines — derived, given, overridden, missing derivatives") {
  check_against_reference("Huber (dual numbers)", Huber{}, [](const Tensor& a, const Tensor& b) {
    Tensor d = abs(sub(a, b));
    return where(lt(d, 1.0), mul(mul(d, d), -0.5), sub(full_like(d, 0.5), d));
  }, Reduce::Sum);
  check_against_reference("ScaledProduct (own dx/dw)", ScaledProduct{}, [](const Tensor& a, const Tensor& b) { return mul(mul(a, b), 3.0); }, Reduce::Sum);

  // Overridden derivatives are honoured: compare with the formula, not the true gradient.
  Tensor x = leaf({1, 1, 3, 3}, Device::cpu()), w = leaf({1, 1, 2, 2}, Device::cpu());
  Tensor y = open_conv2d(x, w, {}, Adder{});
  sum(y).backward();
  auto xv = vals(x), wv = vals(w);
  std::vector<double> want_dw(4, 0.0), want_dx(9, 0.0);
  for (int oh = 0; oh < 2; ++oh)
    for (int ow = 0; ow < 2; ++ow)
      for (int ki = 0; ki < 2; ++ki)
        for (int kj = 0; kj < 2; ++kj) {
          double xx = xv[size_t((oh + ki) * 3 + ow + kj)], ww = wv[size_t(ki * 2 + kj)];
          want_dw[size_t(ki * 2 + kj)] += xx - ww;
          want_dx[size_t((oh + ki) * 3 + ow + kj)] += std::clamp(ww - xx, -1.0, 1.0);
        }
  check_close(vals(w.grad()), want_dw, 1e-12);
  check_close(vals(x.grad()), want_dx, 1e-12);

  // Without derivatives: fine with no gradient, a clear error as soon as one is needed.
  Tensor xd = randn({1, 1, 4, 4}, kFloat64), wd = randn({2, 1, 3, 3}, kFloat64);
  CHECK(open_conv2d(xd, wd, {}, NoDerivatives{}).sizes() == Shape{1, 2, 2, 2});
  CHECK_ERROR(open_conv2d(xd, wd.requires_grad_(), {}, NoDerivatives{}), "open_conv2d", "NoDerivatives",
              "cannot be differentiated", "dx(x, w)");
}

TEST_CASE("open_conv2d: weight and output hooks") {
  Tensor x = leaf({2, 2, 5, 5}, Device::cpu()), w = leaf({3, 2, 3, 3}, Device::cpu()), b = leaf({3}, Device::cpu());
  auto wnorm = [](const Tensor& t) { return div(t, sqrt(sum(mul(t, t)))); };
  auto out_fn = [](const Tensor& t) { return tanh(t); };
  OpenConv2dOptions o{.padding = 1, .weight = wnorm, .output = out_fn};
  Tensor y = open_conv2d(x, w, b, combine::L1{}, o);
  auto l1 = [](const Tensor& a, const Tensor& bb) { return neg(abs(sub(a, bb))); };
  Tensor want = add(tanh(reference(x, wnorm(w), {2, 2, 5, 5, 3, 3, 1, 1, 1, 1}, l1, builtin(Reduce::Sum))), b.view({1, -1, 1, 1}));
  check_close(vals(y), vals(want), 1e-12);
  CHECK_GRAD([&](const std::vector<Tensor>& in) { return open_conv2d(in[0], in[1], in[2], combine::L1{}, o); }, x, w, b);
  OpenConv2dOptions bad{.weight = [](const Tensor& t) { return t.flatten(); }};
  CHECK_ERROR(open_conv2d(x, w, b, combine::L1{}, bad), "open_conv2d", "weight hook", "[3, 2, 3, 3]", "[54]");
}

TEST_CASE("open_conv2d: bad input names the op") {
  Tensor x = ones({1, 3, 5, 5}), w = ones({4, 3, 3, 3});
  CHECK_ERROR(open_conv2d(x, ones({4, 2, 3, 3}), {}, combine::L1{}), "open_conv2d", "3 channels");
  CHECK_ERROR(open_conv2d(x, ones({4, 3, 7, 7}), {}, combine::L1{}), "open_conv2d", "larger than the padded input");
  CHECK_ERROR(open_conv2d(x, w, {}, combine::L1{}, {.stride = 0}), "open_conv2d", "stride");
  CHECK_ERROR(open_conv2d(x, ones({4, 1, 3, 3}), {}, combine::L1{}, {.groups = 2}), "open_conv2d", "groups=2");
  CHECK_ERROR(open_conv2d(x, w, ones({5}), combine::Mul{}), "open_conv2d", "bias", "[5]");
}

TEST_CASE("open_conv2d: the fused path never holds more than one image's columns") {
  // 8 images 16->16 3x3 on 16x16: the broadcast tensor would be 8*16*144*256*4 = 18.9 MB.
  Tensor x = randn({8, 16, 16, 16}), w = randn({16, 16, 3, 3}, requires_grad());
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base = memory_stats().current_bytes;
  Tensor y = open_conv2d(x, w, {}, combine::L1{}, {.padding = 1});
  sum(y).backward();
  const int64_t peak = memory_stats().peak_bytes - base;
  const int64_t io = 2 * y.numel() * 4 + 2 * w.numel() * 4;  // output and its gradient, weight grad
  const int64_t cols = 144 * 256 * 4;                         // one image's columns (and its dcols)
  CHECK(peak <= io + 2 * cols + 64 * 1024);
  CHECK(peak < 8LL * 16 * 144 * 256 * 4 / 8);
}


namespace {
// Normalises each patch (each column of one image's unfold) to unit length, plus 0.1: the
// cosine-similarity patch hook.
Tensor normalise_patches(const Tensor& cols) {
  return div(cols, add(sqrt(sum(mul(cols, cols), {1}, true)), 0.1));
}
}  // namespace

TEST_CASE("open_conv2d: patch hooks run per tile and are recomputed per tile in backward") {
  auto mul_ops = [](const Tensor& a, const Tensor& b) { return mul(a, b); };
  auto l1_ops = [](const Tensor& a, const Tensor& b) { return neg(abs(sub(a, b))); };
  auto runner = [](auto comb) {
    return [comb](const Tensor& x, const Tensor& w, const Tensor& b, const OpenConv2dOptions& o) {
      return open_conv2d(x, w, b, comb, o);
    };
  };
  check_case("patch hook, multiply+sum (GEMM per tile)", runner(combine::Mul{}), mul_ops, builtin(Reduce::Sum),
             {.patch = normalise_patches});
  check_case("patch hook, L1 (fused)", runner(combine::L1{}), l1_ops, builtin(Reduce::Sum), {.patch = normalise_patches});
  check_case("patch hook, L2 (separable, GEMMs per tile)", runner(combine::L2{}),
             [](const Tensor& a, const Tensor& b) { Tensor d = sub(a, b); return neg(mul(d, d)); },
             builtin(Reduce::Sum), {.patch = normalise_patches});
  check_case("patch hook, max-plus", runner(combine::Add{}), [](const Tensor& a, const Tensor& b) { return add(a, b); },
             builtin(Reduce::Max), {.reduce = Reduce::Max, .patch = normalise_patches});

  // A parameter used inside the hook gets its gradient through the per-tile recomputation.
  Tensor s = leaf({1}, Device::cpu());
  TensorFn scaled = [s](const Tensor& cols) { return mul(normalise_patches(cols), s); };
  Tensor x = leaf({2, 2, 5, 5}, Device::cpu()), w = leaf({3, 2, 3, 3}, Device::cpu());
  sum(mul(open_conv2d(x, w, {}, combine::L1{}, {.padding = 1, .patch = scaled}), 0.5)).backward();
  Tensor gs = s.grad(), gx = x.grad();
  s.zero_grad(), x.zero_grad();
  auto l1 = [](const Tensor& a, const Tensor& bb) { return neg(abs(sub(a, bb))); };
  sum(mul(reference(x, w, {2, 2, 5, 5, 3, 3, 1, 1, 1, 1}, l1, builtin(Reduce::Sum), scaled), 0.5)).backward();
  check_close(vals(gs), vals(s.grad()), 1e-10);
  check_close(vals(gx), vals(x.grad()), 1e-10);

  // A hook that changes the columns' shape is refused, naming both shapes.
  Tensor xb = randn({1, 3, 5, 5}), wb = randn({4, 3, 3, 3});
  CHECK_ERROR(open_conv2d(xb, wb, {}, combine::L1{}, {.patch = [](const Tensor& c) { return c.narrow(1, 0, 2); }}),
              "open_conv2d", "patch hook", "[1, 27, 9]", "[1, 2, 9]");
  CHECK_ERROR(open_conv2d(xb, wb, {}, combine::Mul{}, {.patch = [](const Tensor& c) { return c.to(kFloat64); }}),
              "open_conv2d", "patch hook", "float64");
}

TEST_CASE("open_conv2d: patch hooks keep memory to one tile at a time") {
  Tensor x = randn({8, 16, 16, 16}), w = randn({16, 16, 3, 3}, requires_grad());
  x.requires_grad_();
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base = memory_stats().current_bytes;
  Tensor y = open_conv2d(x, w, {}, combine::L1{}, {.padding = 1, .patch = normalise_patches});
  sum(y).backward();
  const int64_t peak = memory_stats().peak_bytes - base;
  const int64_t io = 2 * y.numel() * 4 + 2 * x.numel() * 4 + 2 * w.numel() * 4;
  const int64_t tile = 144 * 256 * 4;  // one image's columns
  CHECK(peak <= io + 10 * tile);       // columns, their gradient and the hook's own intermediates
  CHECK(peak < 8LL * 16 * 144 * 256 * 4 / 4);
}

namespace {
// User reductions: associative, with an identity; gradients from dual numbers.
struct LogSumExp {
  static constexpr double identity = -std::numeric_limits<double>::infinity();
  template <class T>
  T operator()(T a, T b) const {
    T hi = cf::max(a, b), lo = cf::min(a, b);
    return hi + cf::log(T(1) + cf::exp(lo - hi));
  }
};
struct Product {
  static constexpr double identity = 1.0;
  template <class T>
  T operator()(T a, T b) const { return a * b; }
};
struct NearOne {  // 1 + x*w/10: keeps a product over a patch well scaled
  template <class T>
  T operator()(T x, T w) const { return T(1) + T(0.1) * x * w; }
};
struct NoIdentity {
  template <class T>
  T operator()(T a, T b) const { return a + b; }
};
struct PlainSum {  // not a template: usable without gradients only
  static constexpr double identity = 0.0;
  float operator()(float a, float b) const { return a + b; }
  double operator()(double a, double b) const { return a + b; }
};
}  // namespace

TEST_CASE("open_conv2d: user reduce functors with their identity") {
  auto l1_ops = [](const Tensor& a, const Tensor& b) { return neg(abs(sub(a, b))); };
  check_case("log-sum-exp of -|x-w|", [](const Tensor& x, const Tensor& w, const Tensor& b, const OpenConv2dOptions& o) {
    return open_conv2d(x, w, b, combine::L1{}, LogSumExp{}, o);
  }, l1_ops, [](const Tensor& v) { return log(sum(exp(v), {2})); });
  check_case("product of 1 + xw/10", [](const Tensor& x, const Tensor& w, const Tensor& b, const OpenConv2dOptions& o) {
    return open_conv2d(x, w, b, NearOne{}, Product{}, o);
  }, [](const Tensor& a, const Tensor& b) { return add(mul(mul(a, b), 0.1), 1.0); }, [](const Tensor& v) {
    Tensor p = v.select(2, 0);
    for (int64_t k = 1; k < v.size(2); ++k) p = mul(p, v.select(2, k));
    return p;
  });

  Tensor x = randn({1, 2, 5, 5}, kFloat64), w = randn({3, 2, 3, 3}, kFloat64);
  CHECK_ERROR(open_conv2d(x, w, {}, combine::L1{}, NoIdentity{}), "open_conv2d", "NoIdentity", "no identity",
              "static constexpr double identity");
  CHECK(allclose(open_conv2d(x, w, {}, combine::L1{}, PlainSum{}), open_conv2d(x, w, {}, combine::L1{})));
  CHECK_ERROR(open_conv2d(x, w.clone().requires_grad_(), {}, combine::L1{}, PlainSum{}), "open_conv2d", "PlainSum",
              "cannot be differentiated");
  CHECK_ERROR(open_conv2d(x, w, {}, combine::L1{}, LogSumExp{}, {.reduce = Reduce::Max}), "open_conv2d",
              "reduce functor", "options.reduce");
}

namespace {
// (x + 1)(w - 2) declared separable with f(0) != 0: the padding correction must be exact.
struct ShiftedProduct {
  template <class T> T operator()(T x, T w) const { return (x + T(1)) * (w - T(2)); }
  static constexpr int separable_terms = 1;
  template <class T> T f(int, T x) const { return x + T(1); }
  template <class T> T g(int, T w) const { return w - T(2); }
};
// x^2 w + 3x: a general f with a varying g (GEMM on f(cols)), and a linear f with a constant g
// that is one row per group (fused row sum).
struct Mixed {
  template <class T> T operator()(T x, T w) const { return x * x * w + T(3) * x; }
  static constexpr int separable_terms = 2;
  template <class T> T f(int i, T x) const { return i == 0 ? x * x : T(3) * x; }
  template <class T> T g(int i, T w) const { return i == 0 ? w : T(1); }
};
struct UserSum {  // the sum as a user reduction: forces the fused kernel
  static constexpr double identity = 0.0;
  template <class T> T operator()(T a, T b) const { return a + b; }
};
// x^2 sign(w): g constant almost everywhere (g' = 0, so no gradient to W) but with rows that
// differ, so it is not the broadcast one-channel conv.
struct SquareSign {
  template <class T> T operator()(T x, T w) const { return x * x * (w > T(0) ? T(1) : T(-1)); }
  static constexpr int separable_terms = 1;
  template <class T> T f(int, T x) const { return x * x; }
  template <class T> T g(int, T w) const { return w > T(0) ? T(1) : T(-1); }
};
// log(x) w: f(0) is -infinity, so with padding the padding's part is not a finite shift.
struct LogTimes {
  template <class T> T operator()(T x, T w) const { return cf::log(x) * w; }
  static constexpr int separable_terms = 1;
  template <class T> T f(int, T x) const { return cf::log(x); }
  template <class T> T g(int, T w) const { return w; }
};
struct WrongSeparable {  // declares x * 2w for x * w
  template <class T> T operator()(T x, T w) const { return x * w; }
  static constexpr int separable_terms = 1;
  template <class T> T f(int, T x) const { return x; }
  template <class T> T g(int, T w) const { return T(2) * w; }
};
}  // namespace

TEST_CASE("open_conv2d: separable combines run as convolutions") {
  check_against_reference("(x+1)(w-2), separable", ShiftedProduct{},
                          [](const Tensor& a, const Tensor& b) { return mul(add(a, 1.0), sub(b, 2.0)); }, Reduce::Sum);
  auto mixed_ops = [](const Tensor& a, const Tensor& b) { return add(mul(mul(a, a), b), mul(a, 3.0)); };
  check_against_reference("x^2 w + 3x, separable", Mixed{}, mixed_ops, Reduce::Sum);
  check_case("x^2 w + 3x, separable, with a patch hook", [](const Tensor& x, const Tensor& w, const Tensor& b,
                                                           const OpenConv2dOptions& o) {
    return open_conv2d(x, w, b, Mixed{}, o);
  }, mixed_ops, builtin(Reduce::Sum), {.patch = normalise_patches});
  // L2 (RBF) as sum_k -x^2 + 2xw - w^2 agrees with the fused kernel (a user reduce functor that
  // sums forces the fused path).
  Tensor x = randn({3, 4, 9, 9}, kFloat64), w = randn({6, 2, 3, 3}, kFloat64);
  Tensor sep = open_conv2d(x, w, {}, combine::L2{}, {.padding = 1, .groups = 2});
  Tensor fused = open_conv2d(x, w, {}, combine::L2{}, UserSum{}, {.padding = 1, .groups = 2});
  check_close(vals(sep), vals(fused), 1e-10);
  CHECK_ERROR(open_conv2d(x, randn({6, 4, 3, 3}, kFloat64), {}, WrongSeparable{}), "open_conv2d", "WrongSeparable",
              "separable form", "disagrees");
  check_against_reference("x^2 sign(w), separable with differing constant rows", SquareSign{},
                          [](const Tensor& a, const Tensor& b) {  // (+ 0 b: W in the graph, with a zero gradient)
                            return mul(mul(a, a), add(sub(mul(gt(b, 0.0).to(b.dtype()), 2.0), 1.0), mul(b, 0.0)));
                          }, Reduce::Sum);
  {  // sign(w) the same for every output channel but not for every input channel: a one-channel
     // conv per group on x^2 itself (not on the channels' sum)
    Tensor xs = randn({2, 4, 7, 7}, kFloat64).requires_grad_();
    Tensor mag = add(rand({6, 2, 3, 3}, kFloat64), 0.5);
    Tensor pattern = zeros({1, 2, 3, 3}, kFloat64);
    {
      auto* q = pattern.data_ptr<double>();
      for (int64_t i = 0; i < pattern.numel(); ++i) q[i] = (i / 9 + i % 3) % 2 ? 1.0 : -1.0;
    }
    Tensor ws = mul(mag, pattern).detach().requires_grad_();
    Tensor y = open_conv2d(xs, ws, {}, SquareSign{}, {.padding = 1, .groups = 2});
    Cfg c{2, 4, 7, 7, 6, 3, 1, 1, 1, 2};
    Tensor x2 = xs.detach().requires_grad_();
    Tensor want = reference(x2, ws, c, [](const Tensor& a, const Tensor& b) {
      return mul(mul(a, a), sub(mul(gt(b, 0.0).to(b.dtype()), 2.0), 1.0));
    }, builtin(Reduce::Sum));
    check_close(vals(y), vals(want), 1e-12);
    sum(mul(y, y.detach())).backward();
    sum(mul(want, want.detach())).backward();
    check_close(vals(xs.grad()), vals(x2.grad()), 1e-10);
  }
  // Which loop path 2 takes: the plain conv, or the tile loop (a patch hook; padding where an f_i(0)
  // is not finite).
  Tensor xp = add(rand({2, 4, 9, 9}, kFloat64), 0.5);
  CHECK(explain_open_conv2d(xp, w, combine::L2{}, {.groups = 2}) == "separable, declared: 3 terms as convolutions");
  CHECK(explain_open_conv2d(xp, w, combine::L2{}, {.groups = 2, .patch = normalise_patches}) ==
        "separable, declared: 3 terms as GEMMs per tile");
  Tensor wl = randn({6, 4, 3, 3}, kFloat64);
  CHECK(explain_open_conv2d(xp, wl, LogTimes{}) == "separable, declared: 1 terms as convolutions");
  CHECK(explain_open_conv2d(xp, wl, LogTimes{}, {.padding = 1}) == "separable, declared: 1 terms as GEMMs per tile");
  {  // unpadded on positive data: the conv path with no shift, against the reference
    Tensor a = xp.detach().requires_grad_(), b = wl.detach().requires_grad_();
    Tensor y = open_conv2d(a, b, {}, LogTimes{});
    Cfg c{2, 4, 9, 9, 6, 3, 1, 0, 1, 1};
    Tensor a2 = xp.detach().requires_grad_(), b2 = wl.detach().requires_grad_();
    Tensor want = reference(a2, b2, c, [](const Tensor& u, const Tensor& v) { return mul(log(u), v); },
                            builtin(Reduce::Sum));
    check_close(vals(y), vals(want), 1e-12);
    sum(mul(y, y.detach())).backward();
    sum(mul(want, want.detach())).backward();
    check_close(vals(a.grad()), vals(a2.grad()), 1e-10);
    check_close(vals(b.grad()), vals(b2.grad()), 1e-10);
  }
}

TEST_CASE("open_conv2d: separable combines keep no columns") {
  // 8 images 16->16 3x3 on 16x16, as the fused path's test: the conv path holds tensors of x's size
  // (f(x) - f(0) for a general term, its gradient), never a tile of columns (144 x 256 per image).
  Tensor x = randn({8, 16, 16, 16}, requires_grad()), w = randn({16, 16, 3, 3}, requires_grad());
  const int64_t xs = x.numel() * 4, cols = 144 * 256 * 4;
  auto peak_of = [&](auto comb) {
    x.zero_grad();
    w.zero_grad();
    empty_cache();
    reset_peak_memory_stats();
    const int64_t base = memory_stats().current_bytes;
    Tensor y = open_conv2d(x, w, {}, comb, {.padding = 1});
    sum(y).backward();
    return memory_stats().peak_bytes - base;
  };
  const int64_t plain = peak_of(combine::Mul{});
  for (int64_t peak : {peak_of(combine::L2{}), peak_of(Mixed{})}) {
    CAPTURE(plain);
    CAPTURE(peak);
    CHECK(peak <= plain + 3 * xs + 64 * 1024);
    CHECK(peak < plain + 8 * cols);
  }
}

TEST_CASE("the README's open-convolution snippets run as written") {
  Tensor x = randn({2, 3, 6, 6}, requires_grad()), w = randn({4, 3, 3, 3}, requires_grad()), b = zeros({4});
  Tensor y = open_conv2d(x, w, b, Huber{}, {.padding = 1});
  Tensor yd = open_conv2d(x, w, {}, combine::Add{}, {.padding = 1, .reduce = Reduce::Max});  // dilation
  Tensor ys = open_conv2d(x, w, {}, combine::Mul{}, {.padding = 1,                        // cosine-like
      .patch  = [](const Tensor& c) { return div(c, add(sqrt(sum(mul(c, c), {1}, true)), 1e-3)); },
      .weight = [](const Tensor& v) { return div(v, sqrt(sum(mul(v, v), {1, 2, 3}, true))); },
      .output = [](const Tensor& s) { return tanh(s); }});
  Tensor yl = open_conv2d(x, w, {}, combine::L1{}, LogSumExp{}, {.padding = 1});  // user reduce (docs/open-conv.md)
  auto layer = std::make_shared<nn::OpenConv2d<Huber>>(3, 4, 3, OpenConv2dOptions{.padding = 1});
  for (const Tensor& t : {y, yd, ys, yl, layer->forward(x)}) CHECK(t.sizes() == Shape{2, 4, 6, 6});
  CHECK(std::abs(ys.to_vector<float>()[0]) < 1.0f);
  sum(add(add(y, yd), add(ys, yl))).backward();
  CHECK(w.grad().defined());
  CHECK(x.grad().defined());
}

namespace {
// Combines with cf:: transcendental functions: vectorised through the vector forms of ops/cf_math.h.
struct GaussianComb {  // exp(-(x - w)^2 / 2): not separable
  template <class T> T operator()(T x, T w) const {
    T d = x - w;
    return cf::exp(T(-0.5) * d * d);
  }
};
struct LogComb {  // log(1 + x^2 + (x w)^2)
  template <class T> T operator()(T x, T w) const { return cf::log(T(1) + x * x + x * w * x * w); }
};
struct SqrtComb {  // sqrt((x - w)^2 + 1)
  template <class T> T operator()(T x, T w) const { return cf::sqrt(cf::sq(x - w) + T(1)); }
};
struct PowComb {  // (|x - w| + 1)^1.5
  template <class T> T operator()(T x, T w) const { return cf::pow(cf::abs(x - w) + T(1), 1.5); }
};
struct SigmoidTanhComb {  // sigmoid(x w) + tanh(x - w)
  template <class T> T operator()(T x, T w) const { return cf::sigmoid(x * w) + cf::tanh(x - w); }
};
struct SoftThreshold {  // branches that differ per lane: x w shrunk towards 0 by 0.3, squared
  template <class T> T operator()(T x, T w) const {  // (smooth at the kinks, for finite differences)
    T t = x * w;
    return t > T(0.3) ? cf::sq(t - T(0.3)) : t < T(-0.3) ? -cf::sq(t + T(0.3)) : T(0);
  }
};
// Separable without saying so: detected.
struct WTanhX {  // w tanh(x): one term
  template <class T> T operator()(T x, T w) const { return w * cf::tanh(x); }
};
struct WExpX {  // w exp(x): one term, f(0) = exp(0) w_s != 0
  template <class T> T operator()(T x, T w) const { return w * cf::exp(x); }
};
struct ProductPlusTanh {  // x w + tanh(x): two terms
  template <class T> T operator()(T x, T w) const { return x * w + cf::tanh(x); }
};
// Separable (x w) except at one patch value the data is full of: a form found on samples spread
// over the range would be wrong there, so detection must check the data's values too.
struct TrapAtValue {
  template <class T> T operator()(T x, T w) const {
    return cf::abs(x - T(0.125)) < T(1e-9) ? x * w * w : x * w;
  }
};
}  // namespace

TEST_CASE("open_conv2d: cf:: transcendental functions and per-lane branches match unfold-and-broadcast") {
  check_against_reference("exp (Gaussian)", GaussianComb{}, [](const Tensor& a, const Tensor& b) {
    Tensor d = sub(a, b);
    return exp(mul(mul(d, d), -0.5));
  }, Reduce::Sum);
  check_against_reference("log", LogComb{}, [](const Tensor& a, const Tensor& b) {
    Tensor xw = mul(a, b);
    return log(add(add(mul(a, a), mul(xw, xw)), 1.0));
  }, Reduce::Sum);
  check_against_reference("sqrt", SqrtComb{}, [](const Tensor& a, const Tensor& b) {
    Tensor d = sub(a, b);
    return sqrt(add(mul(d, d), 1.0));
  }, Reduce::Sum);
  check_against_reference("pow", PowComb{}, [](const Tensor& a, const Tensor& b) {
    return pow(add(abs(sub(a, b)), 1.0), 1.5);
  }, Reduce::Sum);
  check_against_reference("sigmoid + tanh, max", SigmoidTanhComb{}, [](const Tensor& a, const Tensor& b) {
    return add(sigmoid(mul(a, b)), tanh(sub(a, b)));
  }, Reduce::Max);
  check_against_reference("soft threshold (branches per lane)", SoftThreshold{}, [](const Tensor& a, const Tensor& b) {
    Tensor t = mul(a, b);
    Tensor hi = sub(t, 0.3), lo = add(t, 0.3);
    return where(gt(t, 0.3), mul(hi, hi), where(lt(t, -0.3), neg(mul(lo, lo)), zeros_like(t)));
  }, Reduce::Sum);

  // float: the 4-, 8- and 16-lane float forms, against the double result.
  Tensor x = randn({2, 8, 9, 9}, kFloat64), w = randn({16, 8, 3, 3}, kFloat64);
  auto float_vs_double = [&](auto comb, Reduce red) {
    Tensor yd = open_conv2d(x, w, {}, comb, {.padding = 1, .reduce = red});
    Tensor yf = open_conv2d(x.to(kFloat32), w.to(kFloat32), {}, comb, {.padding = 1, .reduce = red});
    check_close(yf.to_vector<double>(), vals(yd), 2e-4);
  };
  float_vs_double(GaussianComb{}, Reduce::Sum);
  float_vs_double(LogComb{}, Reduce::Sum);
  float_vs_double(SqrtComb{}, Reduce::Sum);
  float_vs_double(PowComb{}, Reduce::Sum);
  float_vs_double(SigmoidTanhComb{}, Reduce::Max);

  // NaN and inf go through the vector functions as through libm: NaN stays NaN, exp(-inf) = 0.
  for (DType dt : {kFloat32, kFloat64}) {
    Tensor xs = zeros({1, 1, 4, 4}, dt), ws = zeros({1, 1, 1, 1}, dt);
    xs.view({-1}).select(0, 0).fill_(std::numeric_limits<double>::quiet_NaN());
    xs.view({-1}).select(0, 1).fill_(std::numeric_limits<double>::infinity());
    const auto y = open_conv2d(xs, ws, {}, GaussianComb{}).to_vector<double>();
    CHECK(std::isnan(y[0]));
    CHECK(y[1] == 0.0);
    CHECK(y[2] == 1.0);
    const auto yl = open_conv2d(xs, ones({1, 1, 1, 1}, dt), {}, LogComb{}).to_vector<double>();
    CHECK(std::isnan(yl[0]));
    CHECK(std::isinf(yl[1]));
    CHECK(yl[2] == 0.0);  // log(1 + 0 + 0)
  }
}

TEST_CASE("open_conv2d: separable combines are detected from the functor and verified on the data") {
  check_against_reference("w tanh(x), detected", WTanhX{}, [](const Tensor& a, const Tensor& b) {
    return mul(b, tanh(a));
  }, Reduce::Sum);
  check_against_reference("x w + tanh(x), detected", ProductPlusTanh{}, [](const Tensor& a, const Tensor& b) {
    return add(mul(a, b), tanh(a));
  }, Reduce::Sum);
  // f(0) != 0 on a general term: the padding's part is the shift f(0) sum_k g(w)
  check_against_reference("w exp(x), detected", WExpX{}, [](const Tensor& a, const Tensor& b) {
    return mul(b, exp(a));
  }, Reduce::Sum);
  Tensor x = randn({2, 4, 7, 7}, kFloat64), w = randn({6, 4, 3, 3}, kFloat64);
  CHECK(explain_open_conv2d(x, w, WTanhX{}) == "separable, detected: 1 terms as convolutions");
  CHECK(explain_open_conv2d(x, w, ProductPlusTanh{}) == "separable, detected: 2 terms as convolutions");
  CHECK(explain_open_conv2d(x, w, combine::L2{}) == "separable, declared: 3 terms as convolutions");
  CHECK(explain_open_conv2d(x, w, combine::Mul{}) == "GEMM convolution (multiply + sum)");
  for (const std::string s : {explain_open_conv2d(x, w, Huber{}), explain_open_conv2d(x, w, GaussianComb{}),
                              explain_open_conv2d(x, w, SoftThreshold{})})
    CHECK(s == "fused kernel (no separable form with up to 3 terms holds on this data)");
  CHECK(explain_open_conv2d(x, w, WTanhX{}, {.detect_separable = false}) == "fused kernel (detect_separable is off)");
  CHECK(explain_open_conv2d(x, w, Adder{}).find("gives its own dx/dw") != std::string::npos);
  CHECK(explain_open_conv2d(x, w, combine::L1{}) == "fused kernel (a built-in combine without a separable form)");
  CHECK(explain_open_conv2d(x, w, WTanhX{}, {.reduce = Reduce::Max}) == "fused kernel (the reduction is not a sum)");
  // Detected and fused agree (float too: the form's rounding stays near float's).
  for (DType dt : {kFloat64, kFloat32}) {
    Tensor xd = x.to(dt), wd = w.to(dt);
    Tensor a = open_conv2d(xd, wd, {}, ProductPlusTanh{}, {.padding = 1});
    Tensor b = open_conv2d(xd, wd, {}, ProductPlusTanh{}, {.padding = 1, .detect_separable = false});
    check_close(a.to_vector<double>(), b.to_vector<double>(), dt == kFloat64 ? 1e-10 : 1e-4);
  }
  // A combine separable only on the data's range: Huber where every |x - w| < 1 is -(x - w)^2 / 2,
  // three terms. The form found there is used there (not checked at fixed points outside it).
  {
    Tensor xh = mul(rand({2, 3, 7, 7}, kFloat64), 0.4), wh = sub(mul(rand({4, 3, 3, 3}, kFloat64), 0.4), 0.2);
    CHECK(explain_open_conv2d(xh, wh, Huber{}, {.padding = 1}) == "separable, detected: 3 terms as convolutions");
    CHECK(explain_open_conv2d(mul(xh, 10.0), wh, Huber{}, {.padding = 1}) ==
          "fused kernel (no separable form with up to 3 terms holds on this data)");
    Tensor a = xh.detach().requires_grad_(), b = wh.detach().requires_grad_();
    Tensor ya = open_conv2d(a, b, {}, Huber{}, {.padding = 1});
    sum(mul(ya, ya.detach())).backward();
    Tensor a2 = xh.detach().requires_grad_(), b2 = wh.detach().requires_grad_();
    Tensor yb = open_conv2d(a2, b2, {}, Huber{}, {.padding = 1, .detect_separable = false});
    sum(mul(yb, yb.detach())).backward();
    check_close(vals(ya), vals(yb), 1e-10);
    check_close(vals(a.grad()), vals(a2.grad()), 1e-10);
    check_close(vals(b.grad()), vals(b2.grad()), 1e-10);
  }
  // The trap: separable on any spread of samples, not at the value half the data holds. The
  // check on the data's own values rejects the form, and the fused kernel gives the right answer.
  Tensor xt = randn({2, 2, 6, 6}, kFloat64), wt = randn({3, 2, 3, 3}, kFloat64);
  {
    auto* p = xt.data_ptr<double>();
    for (int64_t i = 0; i < xt.numel(); i += 2) p[i] = 0.125;
  }
  CHECK(explain_open_conv2d(xt, wt, TrapAtValue{}) == "fused kernel (no separable form with up to 3 terms holds on this data)");
  Cfg c{2, 2, 6, 6, 3, 3, 1, 0, 1, 1};
  Tensor want = reference(xt, wt, c, [](const Tensor& a, const Tensor& b) {
    Tensor at = where(lt(abs(sub(a, 0.125)), 1e-9), mul(a, mul(b, b)), mul(a, b));
    return at;
  }, builtin(Reduce::Sum));
  check_close(vals(open_conv2d(xt, wt, {}, TrapAtValue{})), vals(want), 1e-12);
  // Non-finite data: no form is trusted; the fused kernel carries the NaN.
  Tensor xn = xt.clone();
  xn.data_ptr<double>()[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK(explain_open_conv2d(xn, wt, WTanhX{}) == "fused kernel (no separable form with up to 3 terms holds on this data)");
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// The vector forms GCC's vectorised loops call (ops/cpu/isa/vecmath.inc), called directly at every
// level the CPU has: b = SSE2, c = AVX, d = AVX2, e = AVX-512, float and double.
namespace {
typedef float vf4 __attribute__((vector_size(16)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
typedef double vd2 __attribute__((vector_size(16)));
typedef double vd4 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));
}  // namespace
#define MGT_DECL(attr, tag, VF, NF, VD, ND)                                          \
  extern "C" {                                                                       \
  attr VF _ZGV##tag##N##NF##v_mg_cf_expf(VF);                                        \
  attr VF _ZGV##tag##N##NF##v_mg_cf_logf(VF);                                        \
  attr VF _ZGV##tag##N##NF##v_mg_cf_tanhf(VF);                                       \
  attr VF _ZGV##tag##N##NF##v_mg_cf_sqrtf(VF);                                       \
  attr VF _ZGV##tag##N##NF##vv_mg_cf_powf(VF, VF);                                   \
  attr VD _ZGV##tag##N##ND##v_mg_cf_exp(VD);                                         \
  attr VD _ZGV##tag##N##ND##v_mg_cf_log(VD);                                         \
  attr VD _ZGV##tag##N##ND##v_mg_cf_tanh(VD);                                        \
  attr VD _ZGV##tag##N##ND##v_mg_cf_sqrt(VD);                                        \
  attr VD _ZGV##tag##N##ND##vv_mg_cf_pow(VD, VD);                                    \
  }                                                                                  \
  namespace {                                                                        \
  template <class S>                                                                 \
  attr void apply_##tag(int fn, const S* a, const S* b, S* out, int n) {             \
    if constexpr (sizeof(S) == 4) {                                                  \
      MGT_APPLY(tag, VF, NF, f)                                                      \
    } else {                                                                         \
      MGT_APPLY(tag, VD, ND, )                                                       \
    }                                                                                \
  }                                                                                  \
  }
// The n elements of a (and b, pow's exponents) through form fn, a vector V of N lanes at a time.
#define MGT_APPLY(tag, V, LANES, f)                                                      \
  for (int i = 0; i < n; i += LANES) {                                                   \
    V x, y, r;                                                                       \
    __builtin_memcpy(&x, a + i, sizeof x);                                           \
    __builtin_memcpy(&y, b + i, sizeof y);                                           \
    r = fn == 0   ? _ZGV##tag##N##LANES##v_mg_cf_exp##f(x)                               \
        : fn == 1 ? _ZGV##tag##N##LANES##v_mg_cf_log##f(x)                               \
        : fn == 2 ? _ZGV##tag##N##LANES##v_mg_cf_tanh##f(x)                              \
        : fn == 3 ? _ZGV##tag##N##LANES##v_mg_cf_sqrt##f(x)                              \
                  : _ZGV##tag##N##LANES##vv_mg_cf_pow##f(x, y);                          \
    __builtin_memcpy(out + i, &r, sizeof r);                                         \
  }
MGT_DECL(, b, vf4, 4, vd2, 2)
MGT_DECL(__attribute__((target("avx"))), c, vf8, 8, vd4, 4)
MGT_DECL(__attribute__((target("avx2,fma"))), d, vf8, 8, vd4, 4)
MGT_DECL(__attribute__((target("avx512f"))), e, vf16, 16, vd8, 8)
#undef MGT_DECL
#undef MGT_APPLY

namespace {
// Distance in units in the last place; 0 for equal values (and two NaNs), huge across signs.
template <class S>
double ulps(S a, S b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : 1e30;
  if (a == b) return 0;
  if (std::isinf(a) || std::isinf(b)) return 1e30;
  return std::abs(double(a) - double(b)) / double(std::nextafter(std::abs(b), std::numeric_limits<S>::infinity()) - std::abs(b));
}

template <class S>
void check_vector_forms() {
  const S inf = std::numeric_limits<S>::infinity(), nan = std::numeric_limits<S>::quiet_NaN();
  std::vector<S> a{0, S(-0.0), 1, -1, S(0.5), S(1e-30), S(-1e-30), 80, 89, -87, -104, S(1e10), S(-1e10), inf, -inf,
                   nan, std::numeric_limits<S>::denorm_min(), S(3.25), S(-2.75), S(20), S(-20), S(1e-3), 2, S(0.1)};
  std::vector<S> b{2, S(0.5), S(-1.5), 3, 0, 1, S(2.5), -1, S(0.25), 2, 3, S(0.5), 2, 2, 3, 2, 2, S(1.5), 2, S(-2), 3, 2, 10, S(7.5)};
  while (a.size() % 16) {
    a.push_back(S(rand({1}, kFloat64).item<double>() * 40 - 20));
    b.push_back(S(rand({1}, kFloat64).item<double>() * 6 - 3));
  }
  const int n = int(a.size());
  struct Level { const char* name; bool has; void (*fn)(int, const S*, const S*, S*, int); };
  const Level levels[] = {{"sse2 (b)", true, apply_b<S>},
                          {"avx (c)", bool(__builtin_cpu_supports("avx")), apply_c<S>},
                          {"avx2 (d)", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), apply_d<S>},
                          {"avx512 (e)", bool(__builtin_cpu_supports("avx512f")), apply_e<S>}};
  const char* names[] = {"exp", "log", "tanh", "sqrt", "pow"};
  for (const Level& l : levels) {
    if (!l.has) continue;
    for (int fn = 0; fn < 5; ++fn) {
      std::vector<S> out(static_cast<size_t>(n));
      l.fn(fn, a.data(), b.data(), out.data(), n);
      for (int i = 0; i < n; ++i) {
        const S x = a[size_t(i)], y = b[size_t(i)];
        const S want = fn == 0 ? std::exp(x) : fn == 1 ? std::log(x) : fn == 2 ? std::tanh(x) : fn == 3 ? std::sqrt(x)
                                                                                                     : std::pow(x, y);
        CAPTURE(l.name);
        CAPTURE(names[fn]);
        CAPTURE(x);
        CAPTURE(y);
        CAPTURE(out[size_t(i)]);
        CHECK(ulps(out[size_t(i)], want) <= 3.0);
      }
    }
  }
}
}  // namespace

TEST_CASE("cf:: vector forms: within 3 ulp of libm at every vector level the CPU has, NaN and inf included") {
  check_vector_forms<float>();
  check_vector_forms<double>();
}
#endif

namespace {
// Shapes for the register blocks: full blocks of 4 channels and of several vectors of positions,
// a channel tail (9 = 2 x 4 + 1, 5 per group) and position tails at every vector width.
const std::vector<Cfg> kBlockCases = {
    {1, 3, 12, 11, 9, 3, 1, 1, 1, 1},
    {2, 4, 10, 9, 10, 3, 1, 1, 1, 2},
    {1, 2, 13, 13, 4, 3, 2, 1, 1, 1},
};
// L1 and Huber written with tensor ops, for the broadcast reference.
Tensor l1_tensors(const Tensor& a, const Tensor& b) { return neg(abs(sub(a, b))); }
Tensor huber_tensors(const Tensor& a, const Tensor& b) {
  Tensor d = abs(sub(a, b));
  return where(lt(d, 1.0), mul(mul(d, d), -0.5), sub(full_like(d, 0.5), d));
}
}  // namespace

TEST_CASE("open_conv2d: the fused kernels of every vector level the CPU has match unfold-and-broadcast") {
  const CpuIsa saved = cpu_isa();
  const TensorCombine l1 = l1_tensors, huber = huber_tensors;
  auto addop = [](const Tensor& a, const Tensor& b) { return add(a, b); };
  auto gauss = [](const Tensor& a, const Tensor& b) {
    Tensor d = sub(a, b);
    return exp(mul(mul(d, d), -0.5));
  };
  for (CpuIsa isa : cpu_isa_levels()) {
    set_cpu_isa(isa);
    const std::string level = cpu_isa_name(isa);
    CAPTURE(level);
    check_against_reference("L1", combine::L1{}, l1, Reduce::Sum, kBlockCases);
    check_against_reference("ScaledProduct (own dx, dw)", ScaledProduct{},
                            [](const Tensor& a, const Tensor& b) { return mul(mul(a, b), 3.0); }, Reduce::Sum, kBlockCases);
    check_against_reference("max-plus", combine::Add{}, addop, Reduce::Max, kBlockCases);
    check_against_reference("erosion", combine::Sub{}, [](const Tensor& a, const Tensor& b) { return sub(a, b); },
                            Reduce::Min, kBlockCases);
    check_against_reference("Huber", Huber{}, huber, Reduce::Sum, kBlockCases);
    check_against_reference("Gaussian", GaussianComb{}, gauss, Reduce::Sum, kBlockCases);
    check_against_reference("w tanh(x), fused", WTanhX{}, [](const Tensor& a, const Tensor& b) { return mul(b, tanh(a)); },
                            Reduce::Sum, kBlockCases, false);
    // float, at this level's float width, against the double reference
    for (const Cfg& c : kBlockCases) {
      Tensor x = randn({c.N, c.C, c.H, c.W}, kFloat64), w = randn({c.Cout, c.C / c.groups, c.k, c.k}, kFloat64);
      const OpenConv2dOptions o{.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups};
      OpenConv2dOptions om = o;
      om.reduce = Reduce::Max;
      check_close(open_conv2d(x.to(kFloat32), w.to(kFloat32), {}, combine::L1{}, o).to_vector<double>(),
                  vals(reference(x, w, c, l1, builtin(Reduce::Sum))), 1e-4);
      check_close(open_conv2d(x.to(kFloat32), w.to(kFloat32), {}, combine::Add{}, om).to_vector<double>(),
                  vals(reference(x, w, c, addop, builtin(Reduce::Max))), 1e-5);
      check_close(open_conv2d(x.to(kFloat32), w.to(kFloat32), {}, GaussianComb{}, o).to_vector<double>(),
                  vals(reference(x, w, c, gauss, builtin(Reduce::Sum))), 1e-4);
    }
  }
  set_cpu_isa(saved);
}

// The Sum backward passes blocks of patch rows whose columns and dcols fit 128 KiB: patches of 144
// (and 72 per group) rows over hundreds of positions take several blocks and a partial last one,
// at every level, with the threads' chunks of positions and with deterministic mode's eight.
TEST_CASE("open_conv2d: the Sum backward over blocks of patch rows matches unfold-and-broadcast") {
  const CpuIsa saved = cpu_isa();
  const std::vector<Cfg> cases = {{1, 16, 24, 24, 9, 3, 1, 1, 1, 1}, {1, 16, 20, 20, 10, 3, 1, 1, 1, 2}};
  for (bool deterministic : {false, true}) {
    use_deterministic_algorithms(deterministic);
    CAPTURE(deterministic);
    for (CpuIsa isa : cpu_isa_levels()) {
      set_cpu_isa(isa);
      const std::string level = cpu_isa_name(isa);
      CAPTURE(level);
      // values and gradients against autograd through the reference; no finite differences at
      // this size (the shapes above check them for the same kernels)
      check_against_reference("L1", combine::L1{}, l1_tensors, Reduce::Sum, cases, true, false);
      check_against_reference("Huber", Huber{}, huber_tensors, Reduce::Sum, cases, false, false);
    }
  }
  use_deterministic_algorithms(false);
  set_cpu_isa(saved);
}
