// Pooling, batch_norm and dropout: naive references, gradients, bad input.
#include <cmath>
#include <limits>

#include "helpers.h"

using namespace mgtest;

namespace {
// Direct pooling over (P, H, W) planes. mode: 0 max, 1 avg (count_include_pad), 2 avg (valid only)
std::vector<double> ref_pool(const Tensor& x, int64_t k, int64_t s, int64_t p, int64_t d, int64_t Ho,
                             int64_t Wo, int mode) {
  auto v = vals(x);
  const int64_t H = x.size(-2), W = x.size(-1), P = x.numel() / (H * W);
  std::vector<double> out;
  for (int64_t pl = 0; pl < P; ++pl)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        int64_t valid = 0, padded = 0;
        for (int64_t ki = 0; ki < k; ++ki)
          for (int64_t kj = 0; kj < k; ++kj) {
            int64_t ih = oh * s - p + ki * d, iw = ow * s - p + kj * d;
            if (ih < H + p && iw < W + p) ++padded;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            double e = v[size_t((pl * H + ih) * W + iw)];
            best = std::max(best, e);
            sum += e;
            ++valid;
          }
        out.push_back(mode == 0 ? best : sum / double(mode == 1 ? padded : valid));
      }
  return out;
}
}  // namespace

TEST_CASE("max_pool2d and avg_pool2d against direct windows") {
  struct Cfg { int64_t k, s, p, d; bool ceil; };
  const std::vector<Cfg> cases = {{2, 2, 0, 1, false}, {3, 2, 1, 1, false}, {3, 2, 1, 1, true},
                                  {2, 1, 1, 2, false}, {3, 3, 0, 1, true}};
  for (Device dev : devices())
    for (const Cfg& c : cases) {
      CAPTURE(dev);
      CAPTURE(c.k);
      CAPTURE(c.ceil);
      Tensor x = leaf({2, 3, 7, 8}, dev);
      MaxPool2dOptions mo{.kernel_size = c.k, .stride = c.s, .padding = c.p, .dilation = c.d, .ceil_mode = c.ceil};
      auto [y, idx] = max_pool2d_with_indices(x, mo);
      const int64_t Ho = y.size(2), Wo = y.size(3);
      auto expect_size = [&](int64_t in) {
        int64_t span = in + 2 * c.p - c.d * (c.k - 1) - 1;
        int64_t o = (c.ceil ? (span + c.s - 1) / c.s : span / c.s) + 1;
        if (c.ceil && (o - 1) * c.s >= in + c.p) --o;
        return o;
      };
      CHECK(Ho == expect_size(7));
      CHECK(Wo == expect_size(8));
      check_close(vals(y), ref_pool(x, c.k, c.s, c.p, c.d, Ho, Wo, 0), 1e-12);
      // indices point at the winners
      auto xv = vals(x), iv = vals(idx), yv = vals(y);
      bool ok = true;
      for (size_t i = 0; i < iv.size(); ++i) ok = ok && xv[(i / size_t(Ho * Wo)) * 56 + size_t(iv[i])] == yv[i];
      CHECK(ok);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return max_pool2d(in[0], mo); }, x);
      if (c.d == 1) {
        for (bool cip : {true, false}) {
          AvgPool2dOptions ao{.kernel_size = c.k, .stride = c.s, .padding = c.p, .ceil_mode = c.ceil, .count_include_pad = cip};
          Tensor a = avg_pool2d(x, ao);
          check_close(vals(a), ref_pool(x, c.k, c.s, c.p, 1, a.size(2), a.size(3), cip ? 1 : 2), 1e-12);
          CHECK_GRAD([&](const std::vector<Tensor>& in) { return avg_pool2d(in[0], ao); }, x);
        }
      }
    }
  // 3-D input (C, H, W)
  CHECK(max_pool2d(ones({3, 4, 4}), {.kernel_size = 2}).sizes() == Shape{3, 2, 2});
}

TEST_CASE("max_pool2d's uint8 window taps route gradients like int64 indices, ties included") {
  // max_pool2d keeps each winner's tap in its window (one byte); max_pool2d_with_indices keeps
  // PyTorch's int64 places. relu-like inputs (many equal zeros) must pick the same winners.
  struct Cfg { int64_t k, s, p, d; };
  for (Device dev : devices())
    for (Cfg c : {Cfg{2, 2, 0, 1}, Cfg{3, 2, 1, 1}, Cfg{2, 1, 1, 2}, Cfg{3, 3, 0, 1}}) {
      CAPTURE(dev);
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

TEST_CASE("adaptive_avg_pool2d against direct windows") {
  for (Device dev : devices())
    for (auto [H, W, oh, ow] : std::vector<std::array<int64_t, 4>>{{7, 5, 3, 2}, {4, 4, 4, 4}, {6, 5, 1, 1}}) {
      CAPTURE(dev);
      Tensor x = leaf({2, 2, H, W}, dev);
      Tensor y = adaptive_avg_pool2d(x, {oh, ow});
      REQUIRE(y.sizes() == Shape{2, 2, oh, ow});
      auto v = vals(x);
      std::vector<double> want;
      for (int64_t pl = 0; pl < 4; ++pl)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            int64_t h0 = i * H / oh, h1 = ((i + 1) * H + oh - 1) / oh, w0 = j * W / ow, w1 = ((j + 1) * W + ow - 1) / ow;
            double s = 0;
            for (int64_t a = h0; a < h1; ++a)
              for (int64_t b = w0; b < w1; ++b) s += v[size_t((pl * H + a) * W + b)];
            want.push_back(s / double((h1 - h0) * (w1 - w0)));
          }
      check_close(vals(y), want, 1e-12);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], {oh, ow}); }, x);
    }
}

TEST_CASE("pooling: bad input") {
  CHECK_ERROR(max_pool2d(ones({4, 4}), {.kernel_size = 2}), "max_pool2d", "(N, C, H, W)", "[4, 4]");
  CHECK_ERROR(max_pool2d(ones({1, 1, 4, 4}), {.kernel_size = 2, .padding = 2}), "max_pool2d", "padding", "half");
  CHECK_ERROR(max_pool2d(ones({1, 1, 2, 2}), {.kernel_size = 3}), "max_pool2d", "larger than the padded input");
  CHECK_ERROR(max_pool2d(ones({1, 1, 4, 4}), {.kernel_size = 2, .stride = 0}), "max_pool2d", "stride");
  CHECK_ERROR(avg_pool2d(ones({1, 1, 4, 4}, kInt64), {.kernel_size = 2}), "avg_pool2d", "floating");
  CHECK_ERROR(adaptive_avg_pool2d(ones({1, 1, 4, 4}), {0, 2}), "adaptive_avg_pool2d", "positive");
}

TEST_CASE("batch_norm: training statistics, running statistics, eval, gradients") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor x = leaf({4, 3, 2, 5}, dev), w = leaf({3}, dev, 0.5, 1.5), b = leaf({3}, dev);
    Tensor rm = zeros({3}, TensorOptions(kFloat64).device(dev)), rv = ones({3}, TensorOptions(kFloat64).device(dev));
    Tensor y = batch_norm(x, rm, rv, w, b, /*training=*/true, 0.1, 1e-5);
    auto xv = vals(x), wv = vals(w), bv = vals(b), yv = vals(y);
    std::vector<double> mean(3, 0), var(3, 0);
    const double M = 4 * 10;
    for (size_t i = 0; i < xv.size(); ++i) mean[(i / 10) % 3] += xv[i] / M;
    for (size_t i = 0; i < xv.size(); ++i) var[(i / 10) % 3] += (xv[i] - mean[(i / 10) % 3]) * (xv[i] - mean[(i / 10) % 3]) / M;
    std::vector<double> want;
    for (size_t i = 0; i < xv.size(); ++i) {
      size_t c = (i / 10) % 3;
      want.push_back((xv[i] - mean[c]) / std::sqrt(var[c] + 1e-5) * wv[c] + bv[c]);
    }
    check_close(yv, want, 1e-10);
    std::vector<double> want_rm, want_rv;
    for (size_t c = 0; c < 3; ++c) {
      want_rm.push_back(0.1 * mean[c]);
      want_rv.push_back(0.9 + 0.1 * var[c] * M / (M - 1));
    }
    check_close(vals(rm), want_rm, 1e-12);
    check_close(vals(rv), want_rv, 1e-12);
    // eval uses the running statistics
    Tensor ye = batch_norm(x, rm, rv, w, b, /*training=*/false);
    std::vector<double> want_e;
    for (size_t i = 0; i < xv.size(); ++i) {
      size_t c = (i / 10) % 3;
      want_e.push_back((xv[i] - want_rm[c]) / std::sqrt(want_rv[c] + 1e-5) * wv[c] + bv[c]);
    }
    check_close(vals(ye), want_e, 1e-10);
    Tensor rm2 = rm.clone(), rv2 = rv.clone();
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, in[1], in[2], true); }, x, w, b);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return batch_norm(in[0], rm2, rv2, in[1], in[2], false); }, x, w, b);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, {}, {}, true); }, x);
  }
  CHECK_ERROR(batch_norm(ones({4}), {}, {}, {}, {}, true), "batch_norm", "(N, C, ...)");
  CHECK_ERROR(batch_norm(ones({2, 3}), {}, {}, ones({4}), {}, true), "batch_norm", "[4]", "3 channels");
  CHECK_ERROR(batch_norm(ones({1, 3}), {}, {}, {}, {}, true), "batch_norm", "more than 1 value");
  CHECK_ERROR(batch_norm(ones({2, 3}), {}, {}, {}, {}, false), "batch_norm", "running_mean");
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
