// The autograd engine: accumulation, diamonds, no-grad, hooks, long chains, retain_graph,
// in-place misuse, and what the tape keeps.
#include "helpers.h"

using namespace mgtest;

TEST_CASE("gradients accumulate across two backward calls") {
  for_each_device([&](Device dev) {
    Tensor x = from_vector<double>({1, 2, 3}).to(dev).requires_grad_();
    sum(mul(x, x)).backward();
    check_close(vals(x.grad()), {2, 4, 6});
    sum(mul(x, 3.0)).backward();
    check_close(vals(x.grad()), {5, 7, 9});
    x.zero_grad();
    CHECK_FALSE(x.grad().defined());
  });
}

TEST_CASE("diamond graph: a tensor used twice receives both contributions") {
  for_each_device([&](Device dev) {
    Tensor x = from_vector<double>({0.5, -1.0}).to(dev).requires_grad_();
    Tensor a = exp(x);
    Tensor y = sum(add(mul(a, 2.0), mul(a, a)));  // 2e^x + e^2x
    y.backward();
    std::vector<double> want;
    for (double v : {0.5, -1.0}) want.push_back(2 * std::exp(v) + 2 * std::exp(2 * v));
    check_close(vals(x.grad()), want);
    CHECK_GRAD([](const std::vector<Tensor>& in) { Tensor e = exp(in[0]); return mul(e, add(e, 1.0)); },
               leaf({3}, dev));
  });
}

TEST_CASE("NoGradGuard records nothing, and nodes exist only when an input needs grad") {
  Tensor x = ones({3}, requires_grad());
  Tensor c = ones({3});
  CHECK(mul(x, 2.0).grad_fn() != nullptr);
  CHECK(mul(c, 2.0).grad_fn() == nullptr);
  CHECK_FALSE(add(c, c).requires_grad());
  {
    NoGradGuard ng;
    CHECK_FALSE(GradMode::is_enabled());
    Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    {
      NoGradGuard nested;
    }
    CHECK_FALSE(GradMode::is_enabled());
  }
  CHECK(GradMode::is_enabled());
  Tensor d = mul(x, 2.0).detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
}

TEST_CASE("hooks see and may replace the gradient") {
  Tensor x = from_vector<double>({1, 2}).requires_grad_();
  Tensor h = mul(x, 3.0);
  std::vector<double> seen;
  h.register_hook([&](const Tensor& g) {
    seen = vals(g);
    return Tensor();  // keep it
  });
  int id = x.register_hook([](const Tensor& g) { return mul(g, 10.0); });  // leaf: replaces
  sum(mul(h, h)).backward();
  check_close(seen, {6, 12});                // d/dh of h^2
  check_close(vals(x.grad()), {180, 360});  // 3 * 2h * 10
  x.zero_grad();
  x.remove_hook(id);
  sum(mul(x, 3.0)).backward();
  check_close(vals(x.grad()), {3, 3});
  Tensor r = mul(x, x);
  r.retain_grad();
  sum(mul(r, 2.0)).backward();
  check_close(vals(r.grad()), {2, 2});
  CHECK_ERROR(ones({2}).register_hook([](const Tensor& g) { return g; }), "register_hook", "does not require grad");
  Tensor y = mul(x, 1.0);
  y.register_hook([](const Tensor&) { return zeros({5}, kFloat64); });
  CHECK_ERROR(sum(y).backward(), "hook", "[2]", "[5]");
}

TEST_CASE("a chain of 100,000 ops runs backward and frees without deep recursion") {
  Tensor x = ones({1}, TensorOptions(kFloat64).requires_grad());
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = mul(y, 1.0000001);
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(std::pow(1.0000001, 100000)).epsilon(1e-9));
  // And a graph that is dropped without running backward frees without recursion too.
  Tensor z = x;
  for (int i = 0; i < 100000; ++i) z = add(z, 1.0);
  z = Tensor();
  CHECK(x.requires_grad());
}

TEST_CASE("retain_graph keeps the graph; without it a second backward is refused") {
  Tensor x = from_vector<double>({2.0}).requires_grad_();
  Tensor y = mul(exp(x), x);
  y.backward(Tensor(), /*retain_graph=*/true);
  double g1 = x.grad().item();
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(2 * g1));
  CHECK_ERROR(y.backward(), "second time", "retain_graph");
}

TEST_CASE("backward errors: non-scalar without a gradient, wrong gradient, no grad") {
  Tensor x = ones({2, 3}, requires_grad());
  Tensor y = mul(x, 2.0);
  CHECK_ERROR(y.backward(), "backward", "[2, 3]", "one element");
  CHECK_ERROR(y.backward(ones({3})), "backward", "[3]", "[2, 3]");
  y.backward(ones({2, 3}));
  check_close(vals(x.grad()), std::vector<double>(6, 2.0));
  CHECK_ERROR(ones({1}).backward(), "backward", "does not require grad");
}

TEST_CASE("in-place misuse is refused with a clear error") {
  Tensor w = ones({3}, requires_grad());
  CHECK_ERROR(w.add_(1.0), "add_", "requires grad", "NoGradGuard");
  CHECK_ERROR(w.mul_(2.0), "mul_", "requires grad");
  {
    NoGradGuard ng;
    w.sub_(ones({3}));  // optimizer-style update: allowed
  }
  check_close(vals(w), {0, 0, 0});
  // a tensor saved for backward and then modified in place
  Tensor x = ones({3}, requires_grad());
  Tensor a = ones({3});
  Tensor y = mul(x, a);
  a.add_(1.0);
  CHECK_ERROR(sum(y).backward(), "mul", "modified by an in-place op");
  // writing into an expanded (overlapping) view
  Tensor e = ones({1}).expand({4});
  CHECK_ERROR(e.fill_(2.0), "fill_", "expanded");
  CHECK_ERROR(ones({2, 3}).add_(ones({3, 3})), "add_", "[3, 3]", "[2, 3]");
  CHECK_ERROR(ones({2}, kInt64).add_(ones({2})), "add_", "float32", "int64");
  CHECK_ERROR(mul(x, 1.0).requires_grad_(false), "requires_grad_", "leaf");
}

TEST_CASE("the tape keeps only what backward reads") {
  // exp's backward reads its output only (relu's too); mul by a constant that does not need grad
  // keeps nothing of the input that needs it.
  Tensor x = randn({256, 256}, requires_grad());
  Tensor c = randn({256, 256});
  const int64_t before = memory_stats().current_bytes;
  Tensor y = exp(x);  // allocates y; saves an alias of y
  CHECK(memory_stats().current_bytes - before == 256 * 256 * 4);
  Tensor z = mul(y, c);  // saves y's alias (for dz/dx) but not c's copy
  CHECK(memory_stats().current_bytes - before == 2 * 256 * 256 * 4);
  y = Tensor();  // y's memory stays: z's backward needs it through exp
  CHECK(memory_stats().current_bytes - before == 2 * 256 * 256 * 4);
  Tensor q = mul(ones({256, 256}), c);  // no grad anywhere: no node, nothing saved
  CHECK(q.grad_fn() == nullptr);
  sum(z).backward();
  check_close(vals(x.grad()), vals(mul(exp(x.detach()), c)), 1e-5);
  // relu keeps one bit per element, neither its input nor its output: both go as soon as nothing
  // else holds them
  Tensor h = mul(x, 2.0);  // a fresh non-leaf
  const int64_t with_h = memory_stats().current_bytes;
  Tensor r = relu(h);
  h = Tensor();
  CHECK(memory_stats().current_bytes == with_h + 256 * 256 / 8);  // r and the mask added, h freed
  Tensor total = sum(r);  // keeps nothing of r
  r = Tensor();
  CHECK(memory_stats().current_bytes < with_h - 256 * 256 * 4 + 256 * 256 / 4);
  std::vector<double> g0 = vals(x.grad()), xv = vals(x);
  total.backward();  // d/dx sum(relu(2x)) = 2 where x > 0, from the mask alone
  std::vector<double> g1 = vals(x.grad());
  bool ok = true;
  for (size_t i = 0; i < xv.size(); ++i)
    ok = ok && std::abs(g1[i] - g0[i] - (xv[i] > 0 ? 2.0 : 0.0)) <= 1e-6 * (1 + std::abs(g0[i]));
  CHECK(ok);
}

TEST_CASE("backward frees what each node saved as soon as that node has run") {
  // A chain of exps saves each output. When the gradient reaches the first exp, the saved outputs
  // of every later exp are gone already.
  Tensor x = randn({64, 1024}, requires_grad());  // 256 KiB per tensor
  Tensor first = exp(x);
  Tensor y = first;
  for (int i = 0; i < 8; ++i) y = exp(mul(y, 0.1));
  const int64_t before = memory_stats().current_bytes;
  int64_t at_first = -1;
  first.register_hook([&](const Tensor&) {
    at_first = memory_stats().current_bytes;
    return Tensor();
  });
  y = sum(y);
  y.backward();
  // 8 saved exp outputs (2 MiB) were live before; at most a couple of gradients are live at the end
  CHECK(at_first >= 0);
  CHECK(at_first < before - 6 * 64 * 1024 * 4);
  // retain_graph keeps them for a second backward
  Tensor z = exp(exp(x));
  Tensor sz = sum(z);
  sz.backward({}, true);
  sz.backward();
}

TEST_CASE("gradcheck catches a wrong backward, and the engine checks returned gradients") {
  // y = x^2 with a backward that forgets the factor 2
  auto wrong_square = [](const Tensor& x) {
    Tensor y = mul(x.detach(), x.detach());
    SavedTensor sx(x);
    record("wrong_square", {x}, {y}, [sx](std::vector<Tensor>& g) {
      return std::vector<Tensor>{mul(g[0], sx.unpack("wrong_square"))};
    });
    return y;
  };
  Tensor x = leaf({4}, Device::cpu(), 0.5, 1.5);
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return wrong_square(in[0]); }, {x});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("input 0") != std::string::npos);

  auto bad_shape = [](const Tensor& x) {
    Tensor y = mul(x.detach(), 2.0);
    record("bad_shape", {x}, {y}, [](std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum(g[0])};
    });
    return y;
  };
  CHECK_ERROR(sum(bad_shape(x)).backward(), "bad_shape", "shape []", "[4]");
  auto bad_count = [](const Tensor& x) {
    Tensor y = mul(x.detach(), 2.0);
    record("bad_count", {x}, {y}, [](std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], g[0]};
    });
    return y;
  };
  CHECK_ERROR(sum(bad_count(x)).backward(), "bad_count", "2 gradients", "1 inputs");
}
