// Reductions: sum, mean, var, max/min (with indices), argmax/argmin.
#include <functional>
#include <numeric>

#include "helpers.h"

using namespace mgtest;

namespace {
// Naive reduction of a (2,3,4) tensor over `dims` (sorted), by f over the reduced elements.
std::vector<double> ref_reduce(const std::vector<double>& v, const Shape& shape, const Shape& dims,
                               const std::function<double(const std::vector<double>&)>& f) {
  Shape ks = shape;
  for (int64_t d : dims) ks[size_t(d)] = 1;
  std::vector<std::vector<double>> groups(size_t(numel_of(ks)));
  for (int64_t i = 0; i < numel_of(shape); ++i) groups[size_t(bcast_index(i, shape, ks))].push_back(v[size_t(i)]);
  std::vector<double> out;
  for (auto& g : groups) out.push_back(f(g));
  return out;
}
double sum_of(const std::vector<double>& g) { return std::accumulate(g.begin(), g.end(), 0.0); }
double mean_of(const std::vector<double>& g) { return sum_of(g) / double(g.size()); }
double var_of(const std::vector<double>& g) {
  double m = mean_of(g), s = 0;
  for (double x : g) s += (x - m) * (x - m);
  return s / double(g.size() - 1);
}
}  // namespace

TEST_CASE("sum, mean and var over dims, with and without keepdim") {
  const Shape shape{2, 3, 4};
  const std::vector<Shape> dim_sets = {{0}, {1}, {2}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (Device dev : devices())
    for (const Shape& dims : dim_sets)
      for (bool keep : {false, true}) {
        CAPTURE(dev);
        CAPTURE(dims);
        CAPTURE(keep);
        Tensor x = leaf(shape, dev);
        Shape sorted = dims;
        for (auto& d : sorted) d = d < 0 ? d + 3 : d;
        std::sort(sorted.begin(), sorted.end());
        Tensor s = sum(x, dims, keep);
        Shape want_shape;
        for (int64_t d = 0; d < 3; ++d) {
          bool red = std::find(sorted.begin(), sorted.end(), d) != sorted.end();
          if (!red) want_shape.push_back(shape[size_t(d)]);
          else if (keep) want_shape.push_back(1);
        }
        CHECK(s.sizes() == want_shape);
        check_close(vals(s), ref_reduce(vals(x), shape, sorted, sum_of), 1e-12);
        check_close(vals(mean(x, dims, keep)), ref_reduce(vals(x), shape, sorted, mean_of), 1e-12);
        check_close(vals(var(x, dims, 1, keep)), ref_reduce(vals(x), shape, sorted, var_of), 1e-10);
        CHECK_GRAD([&](const std::vector<Tensor>& in) { return sum(in[0], dims, keep); }, x);
        CHECK_GRAD([&](const std::vector<Tensor>& in) { return mean(in[0], dims, keep); }, x);
        CHECK_GRAD([&](const std::vector<Tensor>& in) { return var(in[0], dims, 1, keep); }, x);
        // the same on a permuted (non-contiguous) input
        Tensor xp = x.detach().permute({2, 0, 1});
        check_close(vals(sum(xp, {0})), vals(sum(x.detach(), {2}).permute({0, 1})), 1e-12);
      }
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

TEST_CASE("max/min with indices, max/min of all, argmax/argmin") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    Tensor x = from_vector<double>({3, 7, 1, 9, 2, 8, 4, 6, 5, 0, 11, 10}, {3, 4}).to(dev);
    auto [v1, i1] = max(x, 1);
    check_close(vals(v1), {9, 8, 11});
    check_close(vals(i1), {3, 1, 2});
    CHECK(i1.dtype() == kInt64);
    auto [v0, i0] = min(x, 0, true);
    CHECK(v0.sizes() == Shape{1, 4});
    check_close(vals(v0), {2, 0, 1, 6});
    check_close(vals(i0), {1, 2, 0, 1});
    CHECK(max(x).item() == 11);
    CHECK(min(x).item() == 0);
    CHECK(argmax(x).item() == 10);
    CHECK(argmin(x).item() == 9);
    check_close(vals(argmax(x, 0)), {2, 1, 2, 2});
    check_close(vals(argmin(x, -1, true)), {2, 0, 1});
    // gradients (inputs without ties)
    Tensor l = leaf({3, 5}, dev);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return std::get<0>(max(in[0], 1)); }, l);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return std::get<0>(min(in[0], 0, true)); }, l);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return max(in[0]); }, l);
    CHECK_GRAD([](const std::vector<Tensor>& in) { return min(in[0]); }, l);
  }
  // ties in max() of all share the gradient
  Tensor t = from_vector<double>({2, 5, 5}).requires_grad_();
  max(t).backward();
  check_close(vals(t.grad()), {0, 0.5, 0.5});
  // first index wins ties along a dim
  check_close(vals(std::get<1>(max(from_vector<double>({1, 3, 3}), 0))), {1});
  CHECK(std::isnan(max(from_vector<double>({1, NAN, 3})).item()));
}

TEST_CASE("reductions: bad input") {
  Tensor x = ones({2, 3});
  CHECK_ERROR(sum(x, {2}), "sum", "dim 2", "[2, 3]");
  CHECK_ERROR(sum(x, {0, 0}), "sum", "repeated");
  CHECK_ERROR(mean(arange(3, kInt64)), "mean", "floating", "int64");
  CHECK_ERROR(var(ones({1})), "var", "degrees of freedom");
  CHECK_ERROR(max(x, 5), "max", "dim 5");
  CHECK_ERROR(max(zeros({0})), "max", "empty");
  CHECK_ERROR(argmax(zeros({2, 0}), 1), "argmax", "size 0");
}
