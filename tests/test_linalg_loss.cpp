// matmul beyond the op table (tests/test_ops.cpp): copies BLAS is spared, 0-dim and empty
// products, integers.
#include "helpers.h"

using namespace mgtest;

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
}

TEST_CASE("matmul: 0-dim results, integers, large products") {
  Tensor v = randn({4}, kFloat64);
  CHECK(matmul(v, v).dim() == 0);
  CHECK(matmul(ones({3, 4}), ones({4})).sizes() == Shape{3});
  check_close(vals(matmul(from_vector<int64_t>({1, 2, 3, 4}, {2, 2}), from_vector<int64_t>({5, 6}, {2}))),
              {17, 39});
  Tensor big_a = randn({300, 200}), big_b = randn({200, 100});
  check_close(vals(mm(big_a, big_b)), ref_mm(vals(big_a), vals(big_b), 300, 200, 100), 1e-4);
}

TEST_CASE("matmul with nothing to multiply: an empty inner dim gives zeros, an empty result nothing") {
  for_each_device([&](Device dev) {
    const TensorOptions o = TensorOptions(kFloat64).device(dev);
    Tensor z = matmul(ones({2, 0}, o), ones({0, 3}, o));
    CHECK(z.sizes() == Shape{2, 3});
    check_close(vals(z), std::vector<double>(6, 0.0));
    CHECK(matmul(ones({0, 4}, o), ones({4, 3}, o)).sizes() == Shape{0, 3});
    // the backend's beta on K == 0: out = beta * out
    Tensor out = full({1, 2, 2}, 3.0, o);
    backend_for(dev).gemm(out, ones({1, 2, 0}, o), ones({1, 0, 2}, o), 1.0, 2.0);
    check_close(vals(out), {6, 6, 6, 6});
  });
}
