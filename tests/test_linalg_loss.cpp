// matmul/mm/bmm, softmax/log_softmax, gather, and the losses.
#include "helpers.h"

using namespace mgtest;

TEST_CASE("mm and matmul against a naive triple loop, with transposed views") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor a = leaf({5, 7}, dev), b = leaf({7, 3}, dev);
    check_close(vals(mm(a, b)), ref_mm(vals(a), vals(b), 5, 7, 3), 1e-12);
    check_close(vals(matmul(a, b)), ref_mm(vals(a), vals(b), 5, 7, 3), 1e-12);
    check_close(vals(matmul(a.detach().to(kFloat32), b.detach().to(kFloat32))),
                ref_mm(vals(a), vals(b), 5, 7, 3), 1e-5);
    // transposed operands, as views
    Tensor at = leaf({7, 5}, dev), bt = leaf({3, 7}, dev);
    check_close(vals(mm(at.t(), bt.t())), ref_mm(vals(at.t()), vals(bt.t()), 5, 7, 3), 1e-12);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return mm(in[0], in[1]); }, a, b);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return mm(in[0].t(), in[1].t()); }, at, bt);
    // a strided view BLAS cannot take directly (every other column)
    Tensor wide = leaf({5, 14}, dev);
    Tensor sl = wide.detach().slice(1, 0, 14, 2);
    check_close(vals(mm(sl, b.detach())), ref_mm(vals(sl), vals(b), 5, 7, 3), 1e-12);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return mm(in[0].slice(1, 0, 14, 2), in[1]); }, wide, b);
  }
}

TEST_CASE("transposed views reach BLAS without copies") {
  Tensor a = randn({64, 32}), b = randn({64, 48});
  const int64_t before = memory_stats().allocation_count;
  Tensor c = mm(a.t(), b);  // (32,64)@(64,48): only the output is allocated
  CHECK(memory_stats().allocation_count - before == 1);
  check_close(vals(c), ref_mm(vals(a.t()), vals(b), 32, 64, 48), 1e-4);
}

TEST_CASE("mm and bmm backward: a transposed operand's gradient reaches its leaf without a copy") {
  // Linear computes x @ weight.t(): the weight's gradient is computed as the transpose of a
  // contiguous product, so weight.grad is that product itself, as for an untransposed operand.
  auto backward_allocations = [](const Tensor& x, const Tensor& w, bool transposed) {
    Tensor y = mm(x, transposed ? w.t() : w).sum();
    const int64_t before = memory_stats().allocation_count;
    y.backward();
    return memory_stats().allocation_count - before;
  };
  Tensor x = randn({16, 24}).requires_grad_(), w = randn({8, 24}).requires_grad_(), u = randn({24, 8}).requires_grad_();
  const int64_t plain = backward_allocations(x, u, false), through_t = backward_allocations(x, w, true);
  CHECK(through_t == plain);
  REQUIRE(w.grad().defined());
  CHECK(w.grad().is_contiguous());
  check_close(vals(w.grad()), vals(mm(ones({16, 8}).t(), x.detach())), 1e-5);
  // the same for a column-major first operand, and for bmm
  Tensor at = randn({24, 16}).requires_grad_();
  Tensor ya = mm(at.t(), u).sum();
  ya.backward();
  CHECK(at.grad().is_contiguous());
  check_close(vals(at.grad()), vals(mm(u.detach(), ones({16, 8}).t())), 1e-5);
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor p = leaf({2, 4, 3}, dev), q = leaf({2, 5, 4}, dev);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return bmm(in[0].transpose(1, 2), in[1].transpose(1, 2)); }, p, q);
  }
}

TEST_CASE("matmul: 1-D, batched and broadcast batch dims, as torch.matmul") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor v = leaf({4}, dev), w = leaf({4}, dev), m = leaf({3, 4}, dev);
    auto vv = vals(v), wv = vals(w);
    double dot = 0;
    for (size_t i = 0; i < 4; ++i) dot += vv[i] * wv[i];
    Tensor d = matmul(v, w);
    CHECK(d.dim() == 0);
    CHECK(d.item() == doctest::Approx(dot));
    CHECK(matmul(m, v).sizes() == Shape{3});
    check_close(vals(matmul(m, v)), ref_mm(vals(m), vv, 3, 4, 1), 1e-12);
    CHECK(matmul(w, m.t()).sizes() == Shape{3});
    Tensor ba = leaf({2, 1, 3, 4}, dev), bb = leaf({5, 4, 2}, dev);
    Tensor r = matmul(ba, bb);
    CHECK(r.sizes() == Shape{2, 5, 3, 2});
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 5; ++j)
        check_close(vals(r[i][j]), ref_mm(vals(ba[i][0]), vals(bb[j]), 3, 4, 2), 1e-12);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, ba, bb);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, m, v);
    Tensor x3 = leaf({2, 3, 4}, dev), y3 = leaf({2, 4, 5}, dev);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return bmm(in[0], in[1]); }, x3, y3);
  }
  check_close(vals(matmul(from_vector<int64_t>({1, 2, 3, 4}, {2, 2}), from_vector<int64_t>({5, 6}, {2}))),
              {17, 39});
  Tensor big_a = randn({300, 200}), big_b = randn({200, 100});
  check_close(vals(mm(big_a, big_b)), ref_mm(vals(big_a), vals(big_b), 300, 200, 100), 1e-4);
}

TEST_CASE("matmul with nothing to multiply: an empty inner dim gives zeros, an empty result nothing") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    const TensorOptions o = TensorOptions(kFloat64).device(dev);
    Tensor z = matmul(ones({2, 0}, o), ones({0, 3}, o));
    CHECK(z.sizes() == Shape{2, 3});
    check_close(vals(z), std::vector<double>(6, 0.0));
    CHECK(matmul(ones({0, 4}, o), ones({4, 3}, o)).sizes() == Shape{0, 3});
    // the backend's beta on K == 0: out = beta * out
    Tensor out = full({1, 2, 2}, 3.0, o);
    backend_for(dev).gemm(out, ones({1, 2, 0}, o), ones({1, 0, 2}, o), 1.0, 2.0);
    check_close(vals(out), {6, 6, 6, 6});
  }
}

TEST_CASE("matmul: bad input") {
  CHECK_ERROR(mm(ones({2, 3}), ones({4, 2})), "mm", "[2, 3]", "[4, 2]");
  CHECK_ERROR(mm(ones({2, 3, 1}), ones({3, 2})), "mm", "2-D");
  CHECK_ERROR(matmul(ones({2, 3}), ones({2, 3})), "matmul", "[2, 3]", "3 != 2");
  CHECK_ERROR(matmul(ones({2, 2, 3}), ones({3, 3, 2})), "matmul", "broadcastable");
  CHECK_ERROR(matmul(ones({2, 2}), ones({2, 2}, kFloat64)), "matmul", "float32", "float64");
  CHECK_ERROR(bmm(ones({2, 2, 3}), ones({3, 3, 2})), "bmm", "[2, 2, 3]", "[3, 3, 2]");
  CHECK_ERROR(matmul(scalar_tensor(1), ones({2})), "matmul", "at least 1 dim");
}

TEST_CASE("softmax and log_softmax against a naive reference") {
  for (Device dev : devices())
    for (int64_t dim : {0, 1, -1}) {
      CAPTURE(dev);
      CAPTURE(dim);
      Tensor x = leaf({3, 5}, dev);
      auto v = vals(x);
      std::vector<double> sm(15), lsm(15);
      int64_t d = dim < 0 ? 1 : dim;
      for (int64_t o = 0; o < (d == 0 ? 5 : 3); ++o) {
        auto at = [&](int64_t i) { return d == 0 ? i * 5 + o : o * 5 + i; };
        int64_t n = d == 0 ? 3 : 5;
        double mx = -1e300, s = 0;
        for (int64_t i = 0; i < n; ++i) mx = std::max(mx, v[size_t(at(i))]);
        for (int64_t i = 0; i < n; ++i) s += std::exp(v[size_t(at(i))] - mx);
        for (int64_t i = 0; i < n; ++i) {
          sm[size_t(at(i))] = std::exp(v[size_t(at(i))] - mx) / s;
          lsm[size_t(at(i))] = v[size_t(at(i))] - mx - std::log(s);
        }
      }
      check_close(vals(softmax(x, dim)), sm, 1e-12);
      check_close(vals(log_softmax(x, dim)), lsm, 1e-12);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, x);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, x);
      // a transposed (non-contiguous) input
      check_close(vals(softmax(x.detach().t(), 1 - d)), vals(softmax(x.detach(), d).t()), 1e-12);
    }
  // stable for large logits
  check_close(vals(softmax(from_vector<double>({1000, 1000}), 0)), {0.5, 0.5});
  CHECK_ERROR(softmax(ones({2, 3}), 2), "softmax", "dim 2", "[2, 3]");
  CHECK_ERROR(log_softmax(arange(3, kInt64), 0), "log_softmax", "floating");
}

TEST_CASE("gather") {
  for (Device dev : devices()) {
    Tensor x = leaf({3, 4}, dev);
    Tensor idx = from_vector<int64_t>({3, 0, 1, 1, 2, 2}, {3, 2}).to(dev);
    auto v = vals(x);
    check_close(vals(gather(x, 1, idx)), {v[3], v[0], v[5], v[5], v[10], v[10]});
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return gather(in[0], 1, idx); }, x);
  }
  CHECK_ERROR(gather(ones({3, 4}), 1, from_vector<int64_t>({4}, {1, 1})), "gather", "index 4", "size 4");
  CHECK_ERROR(gather(ones({3, 4}), 1, ones({3, 1})), "gather", "int64");
  CHECK_ERROR(gather(ones({3, 4}), 1, from_vector<int64_t>({0})), "gather", "same number of dims");
}

TEST_CASE("cross_entropy, nll_loss and mse_loss against naive references") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor logits = leaf({4, 5}, dev);
    Tensor target = from_vector<int64_t>({1, 0, 4, 2}).to(dev);
    auto lv = vals(logits), tv = vals(target);
    std::vector<double> per;
    for (int64_t i = 0; i < 4; ++i) {
      double mx = -1e300, s = 0;
      for (int64_t c = 0; c < 5; ++c) mx = std::max(mx, lv[size_t(i * 5 + c)]);
      for (int64_t c = 0; c < 5; ++c) s += std::exp(lv[size_t(i * 5 + c)] - mx);
      per.push_back(-(lv[size_t(i * 5 + int64_t(tv[size_t(i)]))] - mx - std::log(s)));
    }
    double total = per[0] + per[1] + per[2] + per[3];
    CHECK(cross_entropy(logits, target).item() == doctest::Approx(total / 4));
    CHECK(cross_entropy(logits, target, Reduction::Sum).item() == doctest::Approx(total));
    check_close(vals(cross_entropy(logits, target, Reduction::None)), per, 1e-12);
    CHECK(nll_loss(log_softmax(logits, 1), target).item() == doctest::Approx(total / 4));
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], target); }, logits);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return nll_loss(in[0], target, Reduction::Sum); }, logits);
    Tensor p = leaf({3, 2}, dev), q = leaf({3, 2}, dev);
    auto pv = vals(p), qv = vals(q);
    double se = 0;
    for (size_t i = 0; i < 6; ++i) se += (pv[i] - qv[i]) * (pv[i] - qv[i]);
    CHECK(mse_loss(p, q).item() == doctest::Approx(se / 6));
    CHECK(mse_loss(p, q, Reduction::Sum).item() == doctest::Approx(se));
    CHECK_GRAD([](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); }, p, q);
  }
}

TEST_CASE("losses: bad input") {
  Tensor logits = ones({4, 5});
  CHECK_ERROR(cross_entropy(logits, from_vector<int64_t>({1, 0, 5, 2})), "nll_loss", "target 5", "5 classes");
  CHECK_ERROR(cross_entropy(logits, from_vector<int64_t>({-1, 0, 1, 2})), "target -1");
  CHECK_ERROR(cross_entropy(logits, ones({4})), "nll_loss", "int64");
  CHECK_ERROR(cross_entropy(logits, from_vector<int64_t>({1, 2})), "nll_loss", "[2]", "[4, 5]");
  CHECK_ERROR(cross_entropy(ones({5}), from_vector<int64_t>({1})), "cross_entropy", "(N, C)", "[5]");
  CHECK_ERROR(mse_loss(ones({3}), ones({4})), "mse_loss", "[3]", "[4]");
}
