// Reductions beyond the op table (tests/test_ops.cpp): 0-dim results, integer sums, long
// parallel reductions, ties, NaN.

#include "helpers.h"

using namespace mgtest;

TEST_CASE("reductions of all elements, integer sums, long reductions") {
  Tensor x = from_vector<double>({1, 2, 3, 4});
  CHECK(sum(x).dim() == 0);
  CHECK(sum(x).item() == 10);
  CHECK(mean(x).item() == 2.5);
  CHECK(var(x).item() == doctest::Approx(5.0 / 3.0));
  CHECK(var(x, 0).item() == doctest::Approx(1.25));
  CHECK(sum(arange(5, kInt64)).dtype() == kInt64);
  // long reductions run in parallel and stay accurate (float32 accumulates in double)
  Tensor big = ones({2000000});
  CHECK(sum(big).item() == 2000000.0);
  Tensor tall = ones({100000, 3});
  check_close(vals(sum(tall, {0})), {100000, 100000, 100000});
}

TEST_CASE("max/min: ties and NaN") {
  // ties in max() of all share the gradient
  Tensor t = from_vector<double>({2, 5, 5}).requires_grad_();
  max(t).backward();
  check_close(vals(t.grad()), {0, 0.5, 0.5});
  // first index wins ties along a dim
  check_close(vals(std::get<1>(max(from_vector<double>({1, 3, 3}), 0))), {1});
  CHECK(std::isnan(max(from_vector<double>({1, NAN, 3})).item()));
}
