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

// out[b, o, p] = reduce_k combine(cols[b, k, p], w[o, k]), building the full broadcast tensor.
Tensor reference(const Tensor& x, const Tensor& w, const Cfg& c, const TensorCombine& comb, Reduce red) {
  Tensor cols = unfold(x, {.kernel_size = c.k, .stride = c.stride, .padding = c.padding, .dilation = c.dilation});
  const int64_t G = c.groups, Og = c.Cout / G, K = cols.size(1) / G, L = cols.size(2);
  std::vector<Tensor> parts;
  for (int64_t g = 0; g < G; ++g) {
    Tensor cg = cols.narrow(1, g * K, K).unsqueeze(1);                       // (N, 1, K, L)
    Tensor wg = w.narrow(0, g * Og, Og).reshape({1, Og, K, 1});             // (1, Og, K, 1)
    Tensor v = comb(cg, wg);                                                 // (N, Og, K, L)
    parts.push_back(red == Reduce::Sum ? sum(v, {2}) : std::get<0>(red == Reduce::Max ? max(v, 2) : min(v, 2)));
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

template <class Comb>
void check_against_reference(const char* name, Comb comb, const TensorCombine& ops, Reduce red) {
  for (size_t ci = 0; ci < kCases.size(); ++ci) {
    const Cfg& c = kCases[ci];
    CAPTURE(name);
    CAPTURE(ci);
    Tensor x = leaf({c.N, c.C, c.H, c.W}, Device::cpu()), w = leaf({c.Cout, c.C / c.groups, c.k, c.k}, Device::cpu()),
           b = leaf({c.Cout}, Device::cpu());
    OpenConv2dOptions o{.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups, .reduce = red};
    Tensor y = open_conv2d(x, w, b, comb, o);
    Tensor want = add(reference(x, w, c, ops, red), b.view({1, -1, 1, 1}));
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
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return open_conv2d(in[0], in[1], in[2], comb, o); }, x, w, b);
  }
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
  Tensor want = add(tanh(reference(x, wnorm(w), {2, 2, 5, 5, 3, 3, 1, 1, 1, 1}, l1, Reduce::Sum)), b.view({1, -1, 1, 1}));
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

TEST_CASE("the README's open-convolution snippet runs as written") {
  Tensor x = randn({2, 3, 6, 6}, requires_grad()), w = randn({4, 3, 3, 3}, requires_grad()), b = zeros({4});
  Tensor y = open_conv2d(x, w, b, Huber{}, {.padding = 1});
  Tensor yd = open_conv2d(x, w, {}, combine::Add{}, {.padding = 1, .reduce = Reduce::Max});
  CHECK(y.sizes() == Shape{2, 4, 6, 6});
  CHECK(yd.sizes() == Shape{2, 4, 6, 6});
  sum(add(y, yd)).backward();
  CHECK(w.grad().defined());
}
