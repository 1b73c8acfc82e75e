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
void check_case(const char* name, const Run& run, const TensorCombine& ops, const TensorReduce& red,
                OpenConv2dOptions base = {}) {
  for (Device dev : devices())
  for (size_t ci = 0; ci < kCases.size(); ++ci) {
    const Cfg& c = kCases[ci];
    const std::string label = name;
    CAPTURE(label);
    CAPTURE(ci);
    CAPTURE(dev);
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
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return run(in[0], in[1], in[2], o); }, x, w, b);
  }
}

template <class Comb>
void check_against_reference(const char* name, Comb comb, const TensorCombine& ops, Reduce red) {
  check_case(name, [comb](const Tensor& x, const Tensor& w, const Tensor& b, const OpenConv2dOptions& o) {
    return open_conv2d(x, w, b, comb, o);
  }, ops, builtin(red), {.reduce = red});
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
struct WrongSeparable {  // declares x * 2w for x * w
  template <class T> T operator()(T x, T w) const { return x * w; }
  static constexpr int separable_terms = 1;
  template <class T> T f(int, T x) const { return x; }
  template <class T> T g(int, T w) const { return T(2) * w; }
};
}  // namespace

TEST_CASE("open_conv2d: separable combines run as GEMM convolutions") {
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
