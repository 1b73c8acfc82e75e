// Elementwise ops beyond the op table (tests/test_ops.cpp): many threads, relu's bit mask,
// scalar overloads, dtype promotion, ties.

#include "helpers.h"

using namespace mgtest;

TEST_CASE("unary ops on large inputs run on several threads and still match") {
  Tensor big = randn({300000}, kFloat64);
  auto bv = vals(big), tv = vals(tanh(big));
  double worst = 0;
  for (size_t i = 0; i < bv.size(); ++i) worst = std::max(worst, std::abs(tv[i] - std::tanh(bv[i])));
  CHECK(worst < 1e-12);
}

TEST_CASE("relu's bit mask: every lane, ragged ends, threads, and gradients it does not own") {
  for_each_cpu_isa([&] {
  for_each_device([&](Device dev) {
    for (DType dt : {kFloat32, kFloat64})
      for (int64_t n : {int64_t(1), int64_t(13), int64_t(16), int64_t(23), int64_t(64), int64_t(72), int64_t(300007)}) {
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

TEST_CASE("neg and abs are defined on integers") {
  Tensor i = arange(4, kInt64);
  check_close(vals(neg(i)), {0, -1, -2, -3});
  check_close(vals(abs(neg(i))), {0, 1, 2, 3});
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
