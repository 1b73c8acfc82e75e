// Custom ops through autograd::Function<T>: forward/backward, context, checks on what backward
// returns, multiple inputs and outputs.
#include "helpers.h"

using namespace mgtest;
using autograd::AutogradContext;
using autograd::variable_list;

namespace {

// y = x^2 whose backward clips the gradient to [-1, 1]: deliberately not the true derivative.
struct ClippedSquare : autograd::Function<ClippedSquare> {
  static constexpr const char* name = "ClippedSquare";
  static Tensor forward(AutogradContext* ctx, const Tensor& x) {
    ctx->save_for_backward({x});
    return mul(x, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    Tensor x = ctx->get_saved_variables()[0];
    Tensor d = mul(mul(g[0], x), 2.0);
    return {minimum(maximum(d, full_like(d, -1.0)), full_like(d, 1.0))};
  }
};

// a * b * scale, with a non-tensor argument and per-input gradient needs.
int g_backward_b_computed = 0;
struct ScaledMul : autograd::Function<ScaledMul> {
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b, double scale) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["scale"] = scale;
    return mul(mul(a, b), scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto s = ctx->get_saved_variables();
    const double scale = std::any_cast<double>(ctx->saved_data["scale"]);
    Tensor ga = ctx->needs_input_grad(0) ? mul(mul(g[0], s[1]), scale) : Tensor();
    Tensor gb;
    if (ctx->needs_input_grad(1)) {
      ++g_backward_b_computed;
      gb = mul(mul(g[0], s[0]), scale);
    }
    return {ga, gb, Tensor()};
  }
};

// Three outputs: 2x, x^3 and (non-differentiable) the int64 argmax.
struct Multi : autograd::Function<Multi> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x) {
    ctx->save_for_backward({x});
    return {mul(x, 2.0), pow(x, 3.0), argmax(x)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    Tensor x = ctx->get_saved_variables()[0];
    CHECK_FALSE(g[2].defined());  // the integer output gets no gradient
    return {add(mul(g[0], 2.0), mul(g[1], mul(mul(x, x), 3.0)))};
  }
};

// Returns its input unchanged: the output is recorded through an alias.
struct Identity : autograd::Function<Identity> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return x; }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0]}; }
};

struct TooMany : autograd::Function<TooMany> {
  static constexpr const char* name = "TooMany";
  static Tensor forward(AutogradContext*, const Tensor& x) { return mul(x, 2.0); }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0], g[0]}; }
};
struct WrongShape : autograd::Function<WrongShape> {
  static constexpr const char* name = "WrongShape";
  static Tensor forward(AutogradContext*, const Tensor& x) { return mul(x, 2.0); }
  static variable_list backward(AutogradContext*, variable_list g) { return {sum(g[0])}; }
};
struct WrongDtype : autograd::Function<WrongDtype> {
  static constexpr const char* name = "WrongDtype";
  static Tensor forward(AutogradContext*, const Tensor& x) { return mul(x, 2.0); }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0].to(kFloat32)}; }
};
struct GradForScalar : autograd::Function<GradForScalar> {
  static constexpr const char* name = "GradForScalar";
  static Tensor forward(AutogradContext*, const Tensor& x, double) { return mul(x, 2.0); }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0], g[0]}; }
};

}  // namespace

TEST_CASE("Function<T>: a deliberately clipped backward is the one used") {
  for_each_device([&](Device dev) {
    Tensor x = from_vector<double>({0.1, -0.2, 3.0, -4.0}).to(dev).requires_grad_();
    Tensor y = ClippedSquare::apply(x);
    CHECK(y.grad_fn()->name() == "ClippedSquare");
    check_close(vals(y), {0.01, 0.04, 9.0, 16.0});
    sum(y).backward();
    check_close(vals(x.grad()), {0.2, -0.4, 1.0, -1.0});  // the true derivative would be 6 and -8
  });
}

TEST_CASE("Function<T>: several inputs, a non-tensor argument, needs_input_grad, gradcheck") {
  for_each_device([&](Device dev) {
    Tensor a = leaf({3, 4}, dev), b = leaf({3, 4}, dev);
    check_close(vals(ScaledMul::apply(a, b, 2.5)), vals(mul(mul(a.detach(), b.detach()), 2.5)), 1e-12);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return ScaledMul::apply(in[0], in[1], 2.5); }, a, b);
    g_backward_b_computed = 0;
    Tensor bc = b.detach();
    sum(ScaledMul::apply(a, bc, 1.0)).backward();
    CHECK(g_backward_b_computed == 0);  // b needed no gradient, so backward skipped it
    Tensor n = ScaledMul::apply(a.detach(), bc, 1.0);
    CHECK(n.grad_fn() == nullptr);  // no input needs a gradient: no node
    {
      NoGradGuard ng;
      CHECK(ScaledMul::apply(a, b, 1.0).grad_fn() == nullptr);
    }
  });
}

TEST_CASE("Function<T>: several outputs, an integer output, an output that is the input") {
  for_each_device([&](Device dev) {
    Tensor x = leaf({5}, dev);
    variable_list outs = Multi::apply(x);
    REQUIRE(outs.size() == 3);
    CHECK(outs[2].dtype() == kInt64);
    CHECK_FALSE(outs[2].requires_grad());
    CHECK_GRAD([](const std::vector<Tensor>& in) {
      variable_list o = Multi::apply(in[0]);
      return add(o[0], o[1]);
    }, x);
    // only one output used: the other gets a zero gradient
    x.zero_grad();
    sum(Multi::apply(x)[1]).backward();
    check_close(vals(x.grad()), vals(mul(mul(x.detach(), x.detach()), 3.0)), 1e-12);
    x.zero_grad();
    Tensor id = Identity::apply(x);
    CHECK_FALSE(id.is_same(x));
    CHECK(id.storage() == x.storage());
    sum(mul(id, 3.0)).backward();
    check_close(vals(x.grad()), std::vector<double>(5, 3.0));
  });
}

TEST_CASE("Function<T>: what backward returns is checked, and the op is named") {
  Tensor x = leaf({4}, Device::cpu());
  CHECK_ERROR(sum(TooMany::apply(x)).backward(), "TooMany", "2 gradients", "1 arguments");
  CHECK_ERROR(sum(WrongShape::apply(x)).backward(), "WrongShape", "shape []", "[4]");
  CHECK_ERROR(sum(WrongDtype::apply(x)).backward(), "WrongDtype", "float32", "float64");
  CHECK_ERROR(sum(GradForScalar::apply(x, 1.0)).backward(), "GradForScalar", "argument 1", "not a tensor");
  // a tensor saved for backward and then changed in place
  Tensor s = from_vector<double>({1, 2, 3, 4}).requires_grad_();
  Tensor y = ClippedSquare::apply(s);
  {
    NoGradGuard ng;
    s.add_(1.0);
  }
  CHECK_ERROR(sum(y).backward(), "ClippedSquare", "modified by an in-place op");
  // the saved tensors are freed after backward unless retain_graph
  Tensor z = ClippedSquare::apply(x);
  Tensor l = sum(z);
  l.backward();
  CHECK_ERROR(z.backward(ones_like(z)), "ClippedSquare", "retain_graph");
  // and a type without a name is named by its C++ type
  Tensor w = ScaledMul::apply(x, x, 1.0);
  CHECK(w.grad_fn()->name().find("ScaledMul") != std::string::npos);
}
