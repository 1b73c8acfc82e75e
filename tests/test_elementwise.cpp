// Elementwise ops: forward against a naive reference, a float64 gradient check, bad input.
#include <functional>

#include "helpers.h"

using namespace mgtest;

namespace {
struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double lo, hi;  // input range for the checks (away from kinks and domain edges)
};
double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
}  // namespace

TEST_CASE("unary ops") {
  const std::vector<UnaryCase> cases = {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double v) { return -v; }, -2, 2},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }, -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }, 0.5, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, 0.5, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, 0.1, 2},
      {"abs-neg", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, -2, -0.1},
      {"pow", [](const Tensor& x) { return pow(x, 2.5); }, [](double v) { return std::pow(v, 2.5); }, 0.5, 2},
      {"pow2", [](const Tensor& x) { return pow(x, 2.0); }, [](double v) { return v * v; }, -2, 2},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, 0.1, 2},
      {"relu-neg", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, -2, -0.1},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, -4, 4},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, -2, 2},
      {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, -3, 3},
  };
  for (Device dev : devices())
    for (const auto& c : cases) {
      CAPTURE(dev);
      CAPTURE(c.name);
      Tensor x = leaf({3, 4}, dev, c.lo, c.hi);
      std::vector<double> want;
      for (double v : vals(x)) want.push_back(c.ref(v));
      check_close(vals(c.op(x)), want, 1e-12);
      check_close(vals(c.op(x.detach().to(kFloat32))), want, 1e-5);
      // a non-contiguous input gives the same values
      Tensor xt = x.detach().t();
      check_close(vals(c.op(xt)), vals(c.op(x.detach()).t()), 1e-12);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, x);
    }
  // Large inputs run on several threads and still match.
  Tensor big = randn({300000}, kFloat64);
  auto bv = vals(big), tv = vals(tanh(big));
  double worst = 0;
  for (size_t i = 0; i < bv.size(); ++i) worst = std::max(worst, std::abs(tv[i] - std::tanh(bv[i])));
  CHECK(worst < 1e-12);
  // sigmoid stays finite for large magnitudes
  check_close(vals(sigmoid(from_vector<double>({-800, 800}))), {0, 1});
}

TEST_CASE("relu's bit mask: every lane, ragged ends, threads, and gradients it does not own") {
  for_each_cpu_isa([&] {
  for (Device dev : devices())
    for (DType dt : {kFloat32, kFloat64})
      for (int64_t n : {int64_t(1), int64_t(13), int64_t(16), int64_t(23), int64_t(64), int64_t(72), int64_t(300007)}) {
        CAPTURE(dev);
        CAPTURE(dt);
        CAPTURE(n);
        // exact zeros and both signs; n not a multiple of 8 leaves a partial mask byte
        Tensor x = sub(relu(randn({n}, TensorOptions(dt).device(dev))), 0.25).requires_grad_(true);
        Tensor y = relu(x);
        Tensor g = randn({n}, TensorOptions(dt).device(dev));
        y.backward(g);
        auto xv = vals(x), gv = vals(g), yv = vals(y), gx = vals(x.grad());
        bool ok = true;
        for (size_t i = 0; i < xv.size(); ++i)
          ok = ok && yv[i] == (xv[i] > 0 ? xv[i] : 0) && gx[i] == (xv[i] > 0 ? gv[i] : 0);
        CHECK(ok);
      }
  });
  // relu masks its incoming gradient in place only when nothing else sees it: here add() hands
  // the same gradient tensor to relu and to h, and h's gradient must stay whole.
  Tensor x = from_vector<float>({-1, 2, -3, 4}).requires_grad_(true);
  Tensor h = zeros({4}).requires_grad_(true);
  add(relu(x), h).backward(ones({4}));
  check_close(vals(x.grad()), {0, 1, 0, 1});
  check_close(vals(h.grad()), {1, 1, 1, 1});
  // a non-contiguous input and a non-contiguous incoming gradient
  Tensor m = from_vector<double>({-1, 2, 3, -4, 5, -6}).view({2, 3}).requires_grad_(true);
  Tensor r = relu(m.t());
  Tensor gr = from_vector<double>({1, 2, 3, 4, 5, 6}).view({2, 3}).t();  // (3, 2), strided
  CHECK_FALSE(gr.is_contiguous());
  r.backward(gr);
  check_close(vals(m.grad()), {0, 2, 3, 0, 5, 0});
}

TEST_CASE("unary ops: bad input") {
  Tensor i = arange(4, kInt64);
  CHECK_ERROR(exp(i), "exp", "floating", "int64", "[4]");
  CHECK_ERROR(gelu(i), "gelu", "floating");
  check_close(vals(neg(i)), {0, -1, -2, -3});  // neg and abs are defined on integers
  check_close(vals(abs(neg(i))), {0, 1, 2, 3});
}

namespace {
struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
};
}  // namespace

TEST_CASE("binary ops broadcast like PyTorch") {
  const std::vector<BinaryCase> cases = {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double a, double b) { return a + b; }},
      {"add-alpha", [](const Tensor& a, const Tensor& b) { return add(a, b, 2.5); }, [](double a, double b) { return a + 2.5 * b; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double a, double b) { return a - b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double a, double b) { return a * b; }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double a, double b) { return a / b; }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }, [](double a, double b) { return std::min(a, b); }},
      {"operators", [](const Tensor& a, const Tensor& b) { return (a + b) * a - b / 2.0; },
       [](double a, double b) { return (a + b) * a - b / 2.0; }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {3, 1}}, {{4}, {2, 3, 4}}, {{2, 1, 4}, {1, 3, 1}}, {{3, 4}, {}}};
  for (Device dev : devices())
    for (const auto& c : cases)
      for (const auto& [sa, sb] : shapes) {
        CAPTURE(dev);
        CAPTURE(c.name);
        CAPTURE(sa);
        CAPTURE(sb);
        Tensor a = leaf(sa, dev, 0.5, 2.0), b = leaf(sb, dev, -2.0, -0.5);
        Tensor out = c.op(a, b);
        Shape so = broadcast_shapes(sa, sb);
        REQUIRE(out.sizes() == so);
        auto va = vals(a), vb = vals(b);
        std::vector<double> want;
        for (int64_t i = 0; i < numel_of(so); ++i)
          want.push_back(c.ref(va[size_t(bcast_index(i, so, sa))], vb[size_t(bcast_index(i, so, sb))]));
        check_close(vals(out), want, 1e-12);
        CHECK_GRAD([&](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); }, a, b);
      }
}

TEST_CASE("binary ops: scalar overloads, dtype promotion, ties, big inputs") {
  Tensor a = from_vector<float>({1, 2, 3});
  check_close(vals(a + 1.0), {2, 3, 4});
  check_close(vals(2.0 - a), {1, 0, -1});
  check_close(vals(6.0 / a), {6, 3, 2});
  check_close(vals(-a * 2.0), {-2, -4, -6});
  CHECK((a + 1.0).dtype() == kFloat32);
  CHECK(add(a, ones({3}, kFloat64)).dtype() == kFloat64);
  CHECK(add(arange(3, kInt64), a).dtype() == kFloat32);
  CHECK((arange(3, kInt64) + 2.0).dtype() == kInt64);
  CHECK((arange(3, kInt64) * 0.5).dtype() == kFloat32);
  check_close(vals(div(arange(7, 10, 1, kInt64), full({3}, 2, kInt64))), {3, 4, 4});
  // maximum on ties splits the gradient evenly
  Tensor x = from_vector<double>({1, 5}).requires_grad_(), y = from_vector<double>({1, 2}).requires_grad_();
  sum(maximum(x, y)).backward();
  check_close(vals(x.grad()), {0.5, 1});
  check_close(vals(y.grad()), {0.5, 0});
  // float32 and float64 operands each get a gradient of their own dtype
  Tensor f = ones({2}, TensorOptions(kFloat32).requires_grad()), d = ones({2}, TensorOptions(kFloat64).requires_grad());
  sum(mul(f, d)).backward();
  CHECK(f.grad().dtype() == kFloat32);
  CHECK(d.grad().dtype() == kFloat64);
  Tensor big1 = randn({400, 500}), big2 = randn({500});
  Tensor s = add(big1, big2);
  auto v1 = vals(big1), v2 = vals(big2), vs = vals(s);
  bool ok = true;
  for (size_t i = 0; i < vs.size(); ++i) ok = ok && std::abs(vs[i] - (v1[i] + v2[i % 500])) < 1e-5;
  CHECK(ok);
  // NaN propagates through maximum/minimum
  CHECK(std::isnan(maximum(from_vector<double>({NAN}), from_vector<double>({1})).item()));
}

TEST_CASE("binary ops: bad input") {
  CHECK_ERROR(add(ones({2, 3}), ones({4})), "add", "[2, 3]", "[4]", "broadcastable");
  CHECK_ERROR(mul(ones({2}), ones({3})), "mul", "[2]", "[3]");
  CHECK_ERROR(div(arange(3, kInt64), zeros({3}, kInt64)), "div", "zero");
  CHECK_ERROR(maximum(ones({5, 2}), ones({5, 3})), "maximum", "[5, 2]", "[5, 3]");
}

TEST_CASE("comparisons and where") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor a = from_vector<double>({1, 2, 3, 4}).to(dev), b = from_vector<double>({4, 2, 2, 5}).to(dev);
    CHECK(eq(a, b).dtype() == kInt64);
    check_close(vals(eq(a, b)), {0, 1, 0, 0});
    check_close(vals(ne(a, b)), {1, 0, 1, 1});
    check_close(vals(lt(a, b)), {1, 0, 0, 1});
    check_close(vals(le(a, b)), {1, 1, 0, 1});
    check_close(vals(gt(a, b)), {0, 0, 1, 0});
    check_close(vals(ge(a, b)), {0, 1, 1, 0});
    check_close(vals(a > 2.0), {0, 0, 1, 1});
    check_close(vals(a == 2.0), {0, 1, 0, 0});
    check_close(vals(where(a > 2.0, a, b)), {4, 2, 3, 4});
    // broadcasting all three
    Tensor cond = from_vector<int64_t>({1, 0, 1}).view({3, 1}).to(dev);
    Tensor w = where(cond, ones({3, 2}, device(dev)), zeros({2}, device(dev)));
    check_close(vals(w), {1, 1, 0, 0, 1, 1});
    Tensor x = leaf({3, 4}, dev), y = leaf({4}, dev);
    Tensor mask = gt(x.detach(), 0.0);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return where(mask, in[0], in[1]); }, x, y);
  }
  CHECK_ERROR(where(ones({2}), ones({3}), ones({3})), "where", "[2]", "[3]");
  CHECK_ERROR(lt(ones({2}), ones({3})), "lt", "[2]", "[3]");
}
