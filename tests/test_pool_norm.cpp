// Pooling, batch_norm and dropout beyond the op table (tests/test_ops.cpp): index kinds, windows
// in the padding, running statistics, dropout's mask.
#include <cmath>
#include <limits>

#include "helpers.h"

using namespace mgtest;

TEST_CASE("max_pool2d's uint8 window taps route gradients like int64 indices, ties included") {
  // max_pool2d keeps each winner's tap in its window (one byte); max_pool2d_with_indices keeps
  // PyTorch's int64 places. relu-like inputs (many equal zeros) must pick the same winners.
  struct Cfg { int64_t k, s, p, d; };
  for_each_device([&](Device dev) {
    for (Cfg c : {Cfg{2, 2, 0, 1}, Cfg{3, 2, 1, 1}, Cfg{2, 1, 1, 2}, Cfg{3, 3, 0, 1}}) {
      CAPTURE(c.k);
      CAPTURE(c.d);
      Tensor base = relu(randn({4, 8, 31, 32}, TensorOptions().device(dev)));
      MaxPool2dOptions mo{.kernel_size = c.k, .stride = c.s, .padding = c.p, .dilation = c.d};
      Tensor a = base.detach().requires_grad_(true), b = base.detach().requires_grad_(true);
      Tensor ya = max_pool2d(a, mo), yb = std::get<0>(max_pool2d_with_indices(b, mo));
      CHECK(vals(ya) == vals(yb));
      Tensor gy = randn(ya.sizes(), TensorOptions().device(dev));
      ya.backward(gy);
      yb.backward(gy);
      CHECK(vals(a.grad()) == vals(b.grad()));
    }
  });
  // A window wholly in the padding (dilation 3 over a 2x2 input) has no winner: -inf, and its
  // gradient goes nowhere (index -1 / no tap), for both kinds of indices.
  Tensor x = leaf({1, 1, 2, 2}, Device::cpu());
  MaxPool2dOptions mo{.kernel_size = 2, .stride = 1, .padding = 1, .dilation = 3};
  auto [y, idx] = max_pool2d_with_indices(x, mo);
  CHECK(y.sizes() == Shape{1, 1, 1, 1});
  CHECK(std::isinf(vals(y)[0]));
  CHECK(vals(idx)[0] == -1);
  y.backward();
  check_close(vals(x.grad()), {0, 0, 0, 0});
  Tensor x2 = x.detach().requires_grad_(true);
  Tensor y2 = max_pool2d(x2, mo);
  CHECK(std::isinf(vals(y2)[0]));
  y2.backward();
  check_close(vals(x2.grad()), {0, 0, 0, 0});
}

TEST_CASE("batch_norm: training updates the running statistics (unbiased variance), eval reads them") {
  for_each_device([&](Device dev) {
    Tensor x = leaf({4, 3, 2, 5}, dev), w = leaf({3}, dev, 0.5, 1.5), b = leaf({3}, dev);
    Tensor rm = zeros({3}, TensorOptions(kFloat64).device(dev)), rv = ones({3}, TensorOptions(kFloat64).device(dev));
    batch_norm(x, rm, rv, w, b, /*training=*/true, 0.1, 1e-5);
    auto xv = vals(x);
    std::vector<double> mean(3, 0), var(3, 0);
    const double M = 4 * 10;
    for (size_t i = 0; i < xv.size(); ++i) mean[(i / 10) % 3] += xv[i] / M;
    for (size_t i = 0; i < xv.size(); ++i) var[(i / 10) % 3] += (xv[i] - mean[(i / 10) % 3]) * (xv[i] - mean[(i / 10) % 3]) / M;
    std::vector<double> want_rm, want_rv;
    for (size_t c = 0; c < 3; ++c) {
      want_rm.push_back(0.1 * mean[c]);
      want_rv.push_back(0.9 + 0.1 * var[c] * M / (M - 1));
    }
    check_close(vals(rm), want_rm, 1e-12);
    check_close(vals(rv), want_rv, 1e-12);
    // eval neither updates them nor uses the batch's
    Tensor ye = batch_norm(x, rm, rv, w, b, /*training=*/false);
    check_close(vals(rm), want_rm, 1e-12);
    auto wv = vals(w), bv = vals(b);
    std::vector<double> want_e;
    for (size_t i = 0; i < xv.size(); ++i) {
      size_t c = (i / 10) % 3;
      want_e.push_back((xv[i] - want_rm[c]) / std::sqrt(want_rv[c] + 1e-5) * wv[c] + bv[c]);
    }
    check_close(vals(ye), want_e, 1e-10);
  });
}

TEST_CASE("dropout zeroes a fraction p, scales the rest, and passes the same mask back") {
  manual_seed(3);
  Tensor x = ones({100000}, requires_grad());
  Tensor y = dropout(x, 0.3);
  auto yv = vals(y);
  int64_t zeros_n = 0;
  bool scaled = true;
  for (double v : yv) {
    if (v == 0) ++zeros_n;
    else scaled = scaled && std::abs(v - 1 / 0.7) < 1e-6;
  }
  CHECK(scaled);
  CHECK(double(zeros_n) / 1e5 == doctest::Approx(0.3).epsilon(0.03));
  sum(y).backward();
  check_close(vals(x.grad()), yv, 1e-6);  // d/dx of x*mask/(1-p) at x=1 is the output itself
  CHECK(dropout(x, 0.5, /*training=*/false).is_same(x));
  Tensor xl = leaf({20}, Device::cpu());
  Generator g1(5);
  Generator keep = g1;
  CHECK_GRAD([&](const std::vector<Tensor>& in) { Generator g = keep; return dropout(in[0], 0.4, true, &g); }, xl);
  CHECK_ERROR(dropout(x, 1.5), "dropout", "1.5");
}
