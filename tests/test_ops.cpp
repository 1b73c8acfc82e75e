// The op table: every differentiable op once, with its input maker and its naive reference, run
// by tests/op_table.cpp on every device and CPU ISA level (values in float64 and float32, strided
// inputs, gradcheck, the device against the CPU, bad calls). Behaviour that is not one op's values
// (memory, in-place tricks, ties, running statistics) is tested beside the op's family elsewhere.
#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <sstream>

#include "op_table.h"

using namespace mgtest;

namespace {

using Ins = std::vector<Tensor>;
using Vals = std::vector<Values>;

// ---- reference helpers: plain loops over row-major values ----

Values map1(const Values& a, const std::function<double(double)>& f) {
  Values r{a.shape, {}};
  for (double v : a.v) r.v.push_back(f(v));
  return r;
}

Values bcast2(const Values& a, const Values& b, const std::function<double(double, double)>& f) {
  Values r{broadcast_shapes(a.shape, b.shape), {}};
  for (int64_t i = 0; i < numel_of(r.shape); ++i)
    r.v.push_back(f(a[bcast_index(i, r.shape, a.shape)], b[bcast_index(i, r.shape, b.shape)]));
  return r;
}

// Reduces x over `dims` (any order, negative allowed) by f over each group's values.
Values reduce_ref(const Values& x, Shape dims, bool keep, const std::function<double(const std::vector<double>&)>& f) {
  const int64_t nd = int64_t(x.shape.size());
  for (auto& d : dims) d = d < 0 ? d + nd : d;
  Shape ks = x.shape;
  for (int64_t d : dims) ks[size_t(d)] = 1;
  std::vector<std::vector<double>> groups(size_t(numel_of(ks)));
  for (int64_t i = 0; i < x.numel(); ++i) groups[size_t(bcast_index(i, x.shape, ks))].push_back(x[i]);
  Values r;
  for (int64_t d = 0; d < nd; ++d) {
    const bool red = std::find(dims.begin(), dims.end(), d) != dims.end();
    if (!red) r.shape.push_back(x.shape[size_t(d)]);
    else if (keep) r.shape.push_back(1);
  }
  for (auto& g : groups) r.v.push_back(f(g));
  return r;
}
double sum_of(const std::vector<double>& g) { return std::accumulate(g.begin(), g.end(), 0.0); }
double mean_of(const std::vector<double>& g) { return sum_of(g) / double(g.size()); }
double var_of(const std::vector<double>& g) {
  double m = mean_of(g), s = 0;
  for (double x : g) s += (x - m) * (x - m);
  return s / double(g.size() - 1);
}
double max_of(const std::vector<double>& g) { return *std::max_element(g.begin(), g.end()); }
double min_of(const std::vector<double>& g) { return *std::min_element(g.begin(), g.end()); }
double argmax_of(const std::vector<double>& g) { return double(std::max_element(g.begin(), g.end()) - g.begin()); }
double argmin_of(const std::vector<double>& g) { return double(std::min_element(g.begin(), g.end()) - g.begin()); }

// Row-major multi-index of element i of shape s, and back.
Shape unravel(int64_t i, const Shape& s) {
  Shape idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = i % s[d];
    i /= s[d];
  }
  return idx;
}
int64_t ravel(const Shape& idx, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + idx[d];
  return i;
}
// out[i] = x[src(multi-index of i in shape)]: the reference of every view op.
Values index_map(const Values& x, const Shape& shape, const std::function<Shape(const Shape&)>& src) {
  Values r{shape, {}};
  for (int64_t i = 0; i < numel_of(shape); ++i) r.v.push_back(x[ravel(src(unravel(i, shape)), x.shape)]);
  return r;
}

// (m, k) @ (k, n) on values
Values mm_ref(const Values& a, const Values& b) {
  const int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
  return {{m, n}, ref_mm(a.v, b.v, m, k, n)};
}
Values transpose_ref(const Values& a) {
  return index_map(a, {a.shape[1], a.shape[0]}, [](const Shape& i) { return Shape{i[1], i[0]}; });
}

OpCase unary(const std::string& name, std::function<Tensor(const Tensor&)> op, std::function<double(double)> ref,
             double lo, double hi, double tol32 = 1e-5) {
  return {.family = "unary", .name = name,
          .make = [=] { return Ins{uniform({3, 4}, lo, hi)}; },
          .fn = [=](const Ins& in) { return op(in[0]); },
          .ref = [=](const Vals& v) { return map1(v[0], ref); },
          .tol = 1e-12, .tol32 = tol32};
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

std::vector<OpCase> unary_cases() {
  std::vector<OpCase> t = {
      unary("neg", [](const Tensor& x) { return neg(x); }, [](double v) { return -v; }, -2, 2),
      unary("exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }, -2, 2),
      unary("log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }, 0.5, 3),
      unary("sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, 0.5, 3),
      unary("abs", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, 0.1, 2),
      unary("abs-neg", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, -2, -0.1),
      unary("pow", [](const Tensor& x) { return pow(x, 2.5); }, [](double v) { return std::pow(v, 2.5); }, 0.5, 2),
      unary("pow2", [](const Tensor& x) { return pow(x, 2.0); }, [](double v) { return v * v; }, -2, 2),
      unary("relu", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, 0.1, 2),
      unary("relu-neg", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, -2, -0.1),
      unary("sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, -4, 4),
      unary("tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, -2, 2),
      unary("gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, -3, 3),
      unary("add-scalar", [](const Tensor& x) { return x + 1.5; }, [](double v) { return v + 1.5; }, -2, 2),
      unary("scalar-sub", [](const Tensor& x) { return 2.0 - x; }, [](double v) { return 2.0 - v; }, -2, 2),
      unary("mul-scalar", [](const Tensor& x) { return -x * 2.0; }, [](double v) { return -v * 2.0; }, -2, 2),
      unary("scalar-div", [](const Tensor& x) { return 6.0 / x; }, [](double v) { return 6.0 / v; }, 0.5, 2),
      unary("div-scalar", [](const Tensor& x) { return div(x, 4.0); }, [](double v) { return v / 4.0; }, -2, 2),
  };
  // sigmoid saturates without overflow for large magnitudes
  t.push_back({.family = "unary", .name = "sigmoid-saturated",
               .make = [] { return Ins{from_vector<double>({-800, -30, 30, 800})}; },
               .fn = [](const Ins& in) { return sigmoid(in[0]); },
               .ref = [](const Vals& v) { return map1(v[0], [](double x) { return 1 / (1 + std::exp(-x)); }); }});
  t.back().bad = {
      {[] { exp(arange(4, kInt64)); }, {"exp", "floating", "int64", "[4]"}},
      {[] { gelu(arange(4, kInt64)); }, {"gelu", "floating"}},
      {[] { log(arange(4, kInt64)); }, {"log", "floating"}},
      {[] { sigmoid(arange(4, kInt64)); }, {"sigmoid", "floating"}},
  };
  return t;
}

// A two-operand op and its elementwise reference (R: double for values, bool for comparisons).
template <class R>
struct Op2 {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<R(double, double)> ref;
};

std::vector<OpCase> binary_cases() {
  const std::vector<Op2<double>> ops = {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double a, double b) { return a + b; }},
      {"add-alpha", [](const Tensor& a, const Tensor& b) { return add(a, b, 2.5); }, [](double a, double b) { return a + 2.5 * b; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double a, double b) { return a - b; }},
      {"sub-alpha", [](const Tensor& a, const Tensor& b) { return sub(a, b, 0.5); }, [](double a, double b) { return a - 0.5 * b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double a, double b) { return a * b; }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double a, double b) { return a / b; }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }, [](double a, double b) { return std::min(a, b); }},
      {"operators", [](const Tensor& a, const Tensor& b) { return (a + b) * a - b / 2.0; },
       [](double a, double b) { return (a + b) * a - b / 2.0; }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {3, 1}}, {{4}, {2, 3, 4}}, {{2, 1, 4}, {1, 3, 1}}, {{3, 4}, {}}};
  std::vector<OpCase> t;
  for (const Op2<double>& b : ops)
    for (const auto& [sa, sb] : shapes) {
      std::ostringstream name;
      name << b.name << " " << sa << " " << sb;
      // a in [0.5, 2), b in [-2, -0.5): no ties for maximum/minimum, no zero divisors
      t.push_back({.family = "binary", .name = name.str(),
                   .make = [sa, sb] { return Ins{uniform(sa, 0.5, 2.0), uniform(sb, -2.0, -0.5)}; },
                   .fn = [op = b.op](const Ins& in) { return op(in[0], in[1]); },
                   .ref = [ref = b.ref](const Vals& v) { return bcast2(v[0], v[1], ref); },
                   .tol = 1e-12});
    }
  t.back().bad = {
      {[] { add(ones({2, 3}), ones({4})); }, {"add", "[2, 3]", "[4]", "broadcastable"}},
      {[] { mul(ones({2}), ones({3})); }, {"mul", "[2]", "[3]"}},
      {[] { div(arange(3, kInt64), zeros({3}, kInt64)); }, {"div", "zero"}},
      {[] { maximum(ones({5, 2}), ones({5, 3})); }, {"maximum", "[5, 2]", "[5, 3]"}},
      {[] { sub(ones({2}, kFloat32), ones({3}, kFloat64)); }, {"sub", "[2]", "[3]"}},
  };
  return t;
}

std::vector<OpCase> compare_cases() {
  const std::vector<Op2<bool>> ops = {
      {"eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }, [](double a, double b) { return a == b; }},
      {"ne", [](const Tensor& a, const Tensor& b) { return ne(a, b); }, [](double a, double b) { return a != b; }},
      {"lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }, [](double a, double b) { return a < b; }},
      {"le", [](const Tensor& a, const Tensor& b) { return le(a, b); }, [](double a, double b) { return a <= b; }},
      {"gt", [](const Tensor& a, const Tensor& b) { return a > b; }, [](double a, double b) { return a > b; }},
      {"ge", [](const Tensor& a, const Tensor& b) { return a >= b; }, [](double a, double b) { return a >= b; }},
  };
  std::vector<OpCase> t;
  for (const Op2<bool>& c : ops) {
    // ties on purpose, and a broadcast operand; integers, so float32 compares the same
    t.push_back({.family = "compare", .name = c.name,
                 .make = [] { return Ins{from_vector<double>({1, 2, 3, 4, 2, 2}, {2, 3}), from_vector<double>({2, 2, 1}, {3})}; },
                 .fn = [op = c.op](const Ins& in) {
                   Tensor r = op(in[0], in[1]);
                   CHECK(r.dtype() == kInt64);
                   return r;
                 },
                 .ref = [ref = c.ref](const Vals& v) { return bcast2(v[0], v[1], [&](double a, double b) { return ref(a, b) ? 1.0 : 0.0; }); },
                 .grad = false});
    t.push_back({.family = "compare", .name = std::string(c.name) + " scalar",
                 .make = [] { return Ins{from_vector<double>({1, 2, 3, 4, 2, 2}, {2, 3})}; },
                 .fn = [op = c.op](const Ins& in) { return op(in[0], scalar_tensor(2.0, TensorOptions(in[0].dtype()).device(in[0].device()))); },
                 .ref = [ref = c.ref](const Vals& v) { return map1(v[0], [&](double a) { return ref(a, 2.0) ? 1.0 : 0.0; }); },
                 .grad = false});
  }
  t.push_back({.family = "compare", .name = "operator> double",
               .make = [] { return Ins{from_vector<double>({1, 2, 3, 4}, {4})}; },
               .fn = [](const Ins& in) { return in[0] > 2.0; },
               .ref = [](const Vals& v) { return map1(v[0], [](double a) { return a > 2.0 ? 1.0 : 0.0; }); },
               .grad = false});
  // where: an int64 condition broadcast against both branches; gradients reach both
  t.push_back({.family = "compare", .name = "where",
               .make = [] { return Ins{ints({1, 0, 1}, {3, 1}), normal({3, 4}), normal({4})}; },
               .fn = [](const Ins& in) { return where(in[0], in[1], in[2]); },
               .ref = [](const Vals& v) {
                 Values r{{3, 4}, {}};
                 for (int64_t i = 0; i < 12; ++i) r.v.push_back(v[0][i / 4] != 0 ? v[1][i] : v[2][i % 4]);
                 return r;
               }});
  t.back().bad = {
      {[] { where(ones({2}), ones({3}), ones({3})); }, {"where", "[2]", "[3]"}},
      {[] { lt(ones({2}), ones({3})); }, {"lt", "[2]", "[3]"}},
  };
  return t;
}

std::vector<OpCase> reduce_cases() {
  std::vector<OpCase> t;
  const Shape shape{2, 3, 4};
  const std::vector<Shape> dim_sets = {{0}, {1}, {2}, {-1}, {0, 2}, {2, 0}, {1, 2}, {0, 1, 2}};
  for (const Shape& dims : dim_sets)
    for (bool keep : {false, true}) {
      std::ostringstream tag;
      tag << dims << (keep ? " keepdim" : "");
      t.push_back({.family = "reduce", .name = "sum " + tag.str(), .make = [=] { return Ins{normal(shape)}; },
                   .fn = [=](const Ins& in) { return sum(in[0], dims, keep); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], dims, keep, sum_of); }});
      t.push_back({.family = "reduce", .name = "mean " + tag.str(), .make = [=] { return Ins{normal(shape)}; },
                   .fn = [=](const Ins& in) { return mean(in[0], dims, keep); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], dims, keep, mean_of); }});
      t.push_back({.family = "reduce", .name = "var " + tag.str(), .make = [=] { return Ins{normal(shape)}; },
                   .fn = [=](const Ins& in) { return var(in[0], dims, 1, keep); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], dims, keep, var_of); }, .tol32 = 1e-3});
    }
  // reductions of every element to a 0-dim tensor
  auto of_all = [&](const std::string& name, std::function<Tensor(const Tensor&)> op,
                    std::function<double(const std::vector<double>&)> f, bool grad = true, double tol32 = 1e-4) {
    t.push_back({.family = "reduce", .name = name, .make = [] { return Ins{normal({3, 5})}; },
                 .fn = [op](const Ins& in) { return op(in[0]); },
                 .ref = [f](const Vals& v) { return Values{{}, {f(v[0].v)}}; }, .tol32 = tol32, .grad = grad});
  };
  of_all("sum of all", [](const Tensor& x) { return sum(x); }, sum_of);
  of_all("mean of all", [](const Tensor& x) { return mean(x); }, mean_of);
  of_all("var of all, correction 0", [](const Tensor& x) { return var(x, 0); },
         [](const std::vector<double>& g) { return var_of(g) * double(g.size() - 1) / double(g.size()); }, true, 1e-3);
  of_all("max of all", [](const Tensor& x) { return max(x); }, max_of);
  of_all("min of all", [](const Tensor& x) { return min(x); }, min_of);
  of_all("argmax of all", [](const Tensor& x) { return argmax(x); }, argmax_of, false);
  // max/min: values (differentiable; normal inputs have no ties) and indices (not differentiable)
  for (int64_t dim : {0, 1, -1})
    for (bool keep : {false, true}) {
      std::ostringstream tag;
      tag << "dim " << dim << (keep ? " keepdim" : "");
      t.push_back({.family = "reduce", .name = "max values " + tag.str(), .make = [] { return Ins{normal({3, 5})}; },
                   .fn = [=](const Ins& in) { return std::get<0>(max(in[0], dim, keep)); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], {dim}, keep, max_of); }});
      t.push_back({.family = "reduce", .name = "min values " + tag.str(), .make = [] { return Ins{normal({3, 5})}; },
                   .fn = [=](const Ins& in) { return std::get<0>(min(in[0], dim, keep)); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], {dim}, keep, min_of); }});
      t.push_back({.family = "reduce", .name = "max indices " + tag.str(), .make = [] { return Ins{normal({3, 5})}; },
                   .fn = [=](const Ins& in) { return std::get<1>(max(in[0], dim, keep)); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], {dim}, keep, argmax_of); }, .grad = false});
      t.push_back({.family = "reduce", .name = "argmin " + tag.str(), .make = [] { return Ins{normal({3, 5})}; },
                   .fn = [=](const Ins& in) { return argmin(in[0], dim, keep); },
                   .ref = [=](const Vals& v) { return reduce_ref(v[0], {dim}, keep, argmin_of); }, .grad = false});
    }
  t.back().bad = {
      {[] { sum(ones({2, 3}), {2}); }, {"sum", "dim 2", "[2, 3]"}},
      {[] { sum(ones({2, 3}), {0, 0}); }, {"sum", "repeated"}},
      {[] { mean(arange(3, kInt64)); }, {"mean", "floating", "int64"}},
      {[] { var(ones({1})); }, {"var", "degrees of freedom"}},
      {[] { max(ones({2, 3}), 5); }, {"max", "dim 5"}},
      {[] { max(zeros({0})); }, {"max", "empty"}},
      {[] { argmax(zeros({2, 0}), 1); }, {"argmax", "size 0"}},
  };
  return t;
}

std::vector<OpCase> linalg_cases() {
  std::vector<OpCase> t;
  t.push_back({.family = "linalg", .name = "mm", .make = [] { return Ins{normal({5, 7}), normal({7, 3})}; },
               .fn = [](const Ins& in) { return mm(in[0], in[1]); },
               .ref = [](const Vals& v) { return mm_ref(v[0], v[1]); }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "mm of transposed views", .make = [] { return Ins{normal({7, 5}), normal({3, 7})}; },
               .fn = [](const Ins& in) { return mm(in[0].t(), in[1].t()); },
               .ref = [](const Vals& v) { return mm_ref(transpose_ref(v[0]), transpose_ref(v[1])); }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "mm of every other column (a view BLAS cannot take)",
               .make = [] { return Ins{normal({5, 14}), normal({7, 3})}; },
               .fn = [](const Ins& in) { return mm(in[0].slice(1, 0, 14, 2), in[1]); },
               .ref = [](const Vals& v) {
                 Values a = index_map(v[0], {5, 7}, [](const Shape& i) { return Shape{i[0], 2 * i[1]}; });
                 return mm_ref(a, v[1]);
               }, .tol = 1e-12});
  auto bmm_ref = [](const Values& a, const Values& b) {
    const int64_t B = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2];
    Values r{{B, m, n}, {}};
    for (int64_t i = 0; i < B; ++i) {
      std::vector<double> ai(a.v.begin() + i * m * k, a.v.begin() + (i + 1) * m * k);
      std::vector<double> bi(b.v.begin() + i * k * n, b.v.begin() + (i + 1) * k * n);
      auto c = ref_mm(ai, bi, m, k, n);
      r.v.insert(r.v.end(), c.begin(), c.end());
    }
    return r;
  };
  t.push_back({.family = "linalg", .name = "bmm", .make = [] { return Ins{normal({2, 3, 4}), normal({2, 4, 5})}; },
               .fn = [](const Ins& in) { return bmm(in[0], in[1]); },
               .ref = [=](const Vals& v) { return bmm_ref(v[0], v[1]); }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "bmm of transposed views", .make = [] { return Ins{normal({2, 4, 3}), normal({2, 5, 4})}; },
               .fn = [](const Ins& in) { return bmm(in[0].transpose(1, 2), in[1].transpose(1, 2)); },
               .ref = [=](const Vals& v) {
                 auto tr = [](const Values& x) {
                   return index_map(x, {x.shape[0], x.shape[2], x.shape[1]}, [](const Shape& i) { return Shape{i[0], i[2], i[1]}; });
                 };
                 return bmm_ref(tr(v[0]), tr(v[1]));
               }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "matmul vector . vector", .make = [] { return Ins{normal({4}), normal({4})}; },
               .fn = [](const Ins& in) { return matmul(in[0], in[1]); },
               .ref = [](const Vals& v) { return Values{{}, ref_mm(v[0].v, v[1].v, 1, 4, 1)}; }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "matmul matrix . vector", .make = [] { return Ins{normal({3, 4}), normal({4})}; },
               .fn = [](const Ins& in) { return matmul(in[0], in[1]); },
               .ref = [](const Vals& v) { return Values{{3}, ref_mm(v[0].v, v[1].v, 3, 4, 1)}; }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "matmul vector . matrix", .make = [] { return Ins{normal({4}), normal({4, 3})}; },
               .fn = [](const Ins& in) { return matmul(in[0], in[1]); },
               .ref = [](const Vals& v) { return Values{{3}, ref_mm(v[0].v, v[1].v, 1, 4, 3)}; }, .tol = 1e-12});
  t.push_back({.family = "linalg", .name = "matmul with broadcast batch dims",
               .make = [] { return Ins{normal({2, 1, 3, 4}), normal({5, 4, 2})}; },
               .fn = [](const Ins& in) { return matmul(in[0], in[1]); },
               .ref = [](const Vals& v) {
                 Values r{{2, 5, 3, 2}, {}};
                 for (int64_t i = 0; i < 2; ++i)
                   for (int64_t j = 0; j < 5; ++j) {
                     std::vector<double> a(v[0].v.begin() + i * 12, v[0].v.begin() + (i + 1) * 12);
                     std::vector<double> b(v[1].v.begin() + j * 8, v[1].v.begin() + (j + 1) * 8);
                     auto c = ref_mm(a, b, 3, 4, 2);
                     r.v.insert(r.v.end(), c.begin(), c.end());
                   }
                 return r;
               }, .tol = 1e-12});
  t.back().bad = {
      {[] { mm(ones({2, 3}), ones({4, 2})); }, {"mm", "[2, 3]", "[4, 2]"}},
      {[] { mm(ones({2, 3, 1}), ones({3, 2})); }, {"mm", "2-D"}},
      {[] { matmul(ones({2, 3}), ones({2, 3})); }, {"matmul", "[2, 3]", "3 != 2"}},
      {[] { matmul(ones({2, 2, 3}), ones({3, 3, 2})); }, {"matmul", "broadcastable"}},
      {[] { matmul(ones({2, 2}), ones({2, 2}, kFloat64)); }, {"matmul", "float32", "float64"}},
      {[] { bmm(ones({2, 2, 3}), ones({3, 3, 2})); }, {"bmm", "[2, 2, 3]", "[3, 3, 2]"}},
      {[] { matmul(scalar_tensor(1), ones({2})); }, {"matmul", "at least 1 dim"}},
  };
  return t;
}

// softmax or log_softmax of a 2-D tensor along dim, stably
Values softmax_ref(const Values& x, int64_t dim, bool log) {
  const int64_t R = x.shape[0], C = x.shape[1], d = dim < 0 ? dim + 2 : dim;
  Values r{x.shape, std::vector<double>(x.v.size())};
  const int64_t outer = d == 0 ? C : R, n = d == 0 ? R : C;
  for (int64_t o = 0; o < outer; ++o) {
    auto at = [&](int64_t i) { return size_t(d == 0 ? i * C + o : o * C + i); };
    double mx = -1e300, s = 0;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x.v[at(i)]);
    for (int64_t i = 0; i < n; ++i) s += std::exp(x.v[at(i)] - mx);
    for (int64_t i = 0; i < n; ++i) r.v[at(i)] = log ? x.v[at(i)] - mx - std::log(s) : std::exp(x.v[at(i)] - mx) / s;
  }
  return r;
}

// per-sample -log_softmax(x)[target] of (N, C) logits
std::vector<double> ce_per_sample(const Values& x, const Values& target, bool logits) {
  const int64_t N = x.shape[0], C = x.shape[1];
  Values ls = logits ? softmax_ref(x, 1, true) : x;
  std::vector<double> per;
  for (int64_t i = 0; i < N; ++i) per.push_back(-ls[i * C + int64_t(target[i])]);
  return per;
}

std::vector<OpCase> softmax_loss_cases() {
  std::vector<OpCase> t;
  for (int64_t dim : {0, 1, -1}) {
    const std::string tag = " dim " + std::to_string(dim);
    t.push_back({.family = "softmax", .name = "softmax" + tag, .make = [] { return Ins{normal({3, 5})}; },
                 .fn = [=](const Ins& in) { return softmax(in[0], dim); },
                 .ref = [=](const Vals& v) { return softmax_ref(v[0], dim, false); }, .tol = 1e-12});
    t.push_back({.family = "softmax", .name = "log_softmax" + tag, .make = [] { return Ins{normal({3, 5})}; },
                 .fn = [=](const Ins& in) { return log_softmax(in[0], dim); },
                 .ref = [=](const Vals& v) { return softmax_ref(v[0], dim, true); }, .tol = 1e-12});
  }
  t.push_back({.family = "softmax", .name = "softmax of large logits",
               .make = [] { return Ins{from_vector<double>({1000, 1000, 999, -1000}, {1, 4})}; },
               .fn = [](const Ins& in) { return softmax(in[0], 1); },
               .ref = [](const Vals& v) { return softmax_ref(v[0], 1, false); }});
  t.back().bad = {
      {[] { softmax(ones({2, 3}), 2); }, {"softmax", "dim 2", "[2, 3]"}},
      {[] { log_softmax(arange(3, kInt64), 0); }, {"log_softmax", "floating"}},
  };
  // gather along either dim, with repeated indices (their gradients add)
  t.push_back({.family = "gather", .name = "gather dim 1",
               .make = [] { return Ins{normal({3, 4}), ints({3, 0, 1, 1, 2, 2}, {3, 2})}; },
               .fn = [](const Ins& in) { return gather(in[0], 1, in[1]); },
               .ref = [](const Vals& v) {
                 return index_map(v[0], {3, 2}, [&](const Shape& i) { return Shape{i[0], int64_t(v[1][i[0] * 2 + i[1]])}; });
               }});
  t.push_back({.family = "gather", .name = "gather dim 0",
               .make = [] { return Ins{normal({3, 4}), ints({2, 0, 1, 2, 2, 2, 0, 0}, {2, 4})}; },
               .fn = [](const Ins& in) { return gather(in[0], 0, in[1]); },
               .ref = [](const Vals& v) {
                 return index_map(v[0], {2, 4}, [&](const Shape& i) { return Shape{int64_t(v[1][i[0] * 4 + i[1]]), i[1]}; });
               }});
  t.back().bad = {
      {[] { gather(ones({3, 4}), 1, from_vector<int64_t>({4}, {1, 1})); }, {"gather", "index 4", "size 4"}},
      {[] { gather(ones({3, 4}), 1, ones({3, 1})); }, {"gather", "int64"}},
      {[] { gather(ones({3, 4}), 1, from_vector<int64_t>({0})); }, {"gather", "same number of dims"}},
  };
  // losses
  auto labels = [] { return ints({1, 0, 4, 2}, {4}); };
  const std::vector<std::pair<const char*, Reduction>> reductions = {
      {"mean", Reduction::Mean}, {"sum", Reduction::Sum}, {"none", Reduction::None}};
  for (const auto& [rname, red] : reductions) {
    auto reduce = [red = red](const std::vector<double>& per) {
      if (red == Reduction::None) return Values{{int64_t(per.size())}, per};
      const double s = sum_of(per);
      return Values{{}, {red == Reduction::Sum ? s : s / double(per.size())}};
    };
    t.push_back({.family = "loss", .name = std::string("cross_entropy ") + rname,
                 .make = [=] { return Ins{normal({4, 5}), labels()}; },
                 .fn = [red = red](const Ins& in) { return cross_entropy(in[0], in[1], red); },
                 .ref = [=](const Vals& v) { return reduce(ce_per_sample(v[0], v[1], true)); }});
    t.push_back({.family = "loss", .name = std::string("nll_loss ") + rname,
                 .make = [=] { return Ins{normal({4, 5}), labels()}; },
                 .fn = [red = red](const Ins& in) { return nll_loss(in[0], in[1], red); },
                 .ref = [=](const Vals& v) { return reduce(ce_per_sample(v[0], v[1], false)); }});
    if (red != Reduction::None)
      t.push_back({.family = "loss", .name = std::string("mse_loss ") + rname,
                   .make = [] { return Ins{normal({3, 2}), normal({3, 2})}; },
                   .fn = [red = red](const Ins& in) { return mse_loss(in[0], in[1], red); },
                   .ref = [=](const Vals& v) {
                     std::vector<double> per;
                     for (int64_t i = 0; i < 6; ++i) per.push_back((v[0][i] - v[1][i]) * (v[0][i] - v[1][i]));
                     return reduce(per);
                   }});
  }
  t.back().bad = {
      {[] { cross_entropy(ones({4, 5}), from_vector<int64_t>({1, 0, 5, 2})); }, {"nll_loss", "target 5", "5 classes"}},
      {[] { cross_entropy(ones({4, 5}), from_vector<int64_t>({-1, 0, 1, 2})); }, {"target -1"}},
      {[] { cross_entropy(ones({4, 5}), ones({4})); }, {"nll_loss", "int64"}},
      {[] { cross_entropy(ones({4, 5}), from_vector<int64_t>({1, 2})); }, {"nll_loss", "[2]", "[4, 5]"}},
      {[] { cross_entropy(ones({5}), from_vector<int64_t>({1})); }, {"cross_entropy", "(N, C)", "[5]"}},
      {[] { mse_loss(ones({3}), ones({4})); }, {"mse_loss", "[3]", "[4]"}},
  };
  return t;
}

// Direct pooling over (P, H, W) planes. mode: 0 max, 1 avg (count_include_pad), 2 avg (valid
// only), 3 the max's index in its plane.
Values pool_ref(const Values& x, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil, int mode) {
  const int64_t nd = int64_t(x.shape.size()), H = x.shape[size_t(nd - 2)], W = x.shape[size_t(nd - 1)];
  const int64_t P = x.numel() / (H * W);
  auto out_size = [&](int64_t in) {
    const int64_t span = in + 2 * p - d * (k - 1) - 1;
    int64_t o = (ceil ? (span + s - 1) / s : span / s) + 1;
    if (ceil && (o - 1) * s >= in + p) --o;
    return o;
  };
  const int64_t Ho = out_size(H), Wo = out_size(W);
  Values r{x.shape, {}};
  r.shape[size_t(nd - 2)] = Ho;
  r.shape[size_t(nd - 1)] = Wo;
  for (int64_t pl = 0; pl < P; ++pl)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        int64_t valid = 0, padded = 0, arg = -1;
        for (int64_t ki = 0; ki < k; ++ki)
          for (int64_t kj = 0; kj < k; ++kj) {
            const int64_t ih = oh * s - p + ki * d, iw = ow * s - p + kj * d;
            if (ih < H + p && iw < W + p) ++padded;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const double e = x[(pl * H + ih) * W + iw];
            if (e > best) {
              best = e;
              arg = ih * W + iw;
            }
            sum += e;
            ++valid;
          }
        r.v.push_back(mode == 0 ? best : mode == 3 ? double(arg) : sum / double(mode == 1 ? padded : valid));
      }
  return r;
}

Values adaptive_avg_ref(const Values& x, int64_t oh, int64_t ow) {
  const int64_t H = x.shape[2], W = x.shape[3], P = x.shape[0] * x.shape[1];
  Values r{{x.shape[0], x.shape[1], oh, ow}, {}};
  for (int64_t pl = 0; pl < P; ++pl)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t h0 = i * H / oh, h1 = ((i + 1) * H + oh - 1) / oh, w0 = j * W / ow, w1 = ((j + 1) * W + ow - 1) / ow;
        double s = 0;
        for (int64_t a = h0; a < h1; ++a)
          for (int64_t b = w0; b < w1; ++b) s += x[(pl * H + a) * W + b];
        r.v.push_back(s / double((h1 - h0) * (w1 - w0)));
      }
  return r;
}

// (x - mean_c) / sqrt(var_c + eps) * w_c + b_c over (N, C, ...) with the given or the batch's statistics
Values batch_norm_ref(const Values& x, const Values* w, const Values* b, const Values* rm, const Values* rv) {
  const int64_t N = x.shape[0], C = x.shape[1], S = x.numel() / (N * C);
  std::vector<double> mean(size_t(C), 0), var(size_t(C), 0);
  for (int64_t c = 0; c < C; ++c) {
    if (rm) {
      mean[size_t(c)] = (*rm)[c];
      var[size_t(c)] = (*rv)[c];
      continue;
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) mean[size_t(c)] += x[(n * C + c) * S + i] / double(N * S);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) {
        const double e = x[(n * C + c) * S + i] - mean[size_t(c)];
        var[size_t(c)] += e * e / double(N * S);
      }
  }
  Values r{x.shape, {}};
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / S) % C;
    double y = (x[i] - mean[size_t(c)]) / std::sqrt(var[size_t(c)] + 1e-5);
    if (w) y = y * (*w)[c] + (*b)[c];
    r.v.push_back(y);
  }
  return r;
}

std::vector<OpCase> pool_norm_cases() {
  std::vector<OpCase> t;
  struct Cfg { int64_t k, s, p, d; bool ceil; };
  const std::vector<Cfg> cfgs = {{2, 2, 0, 1, false}, {3, 2, 1, 1, false}, {3, 2, 1, 1, true},
                                 {2, 1, 1, 2, false}, {3, 3, 0, 1, true}};
  for (const Cfg& c : cfgs) {
    std::ostringstream tag;
    tag << " k" << c.k << " s" << c.s << " p" << c.p << " d" << c.d << (c.ceil ? " ceil" : "");
    const MaxPool2dOptions mo{.kernel_size = c.k, .stride = c.s, .padding = c.p, .dilation = c.d, .ceil_mode = c.ceil};
    t.push_back({.family = "pool", .name = "max_pool2d" + tag.str(), .make = [] { return Ins{normal({2, 3, 7, 8})}; },
                 .fn = [=](const Ins& in) { return max_pool2d(in[0], mo); },
                 .ref = [=](const Vals& v) { return pool_ref(v[0], c.k, c.s, c.p, c.d, c.ceil, 0); }});
    t.push_back({.family = "pool", .name = "max_pool2d_with_indices values" + tag.str(), .make = [] { return Ins{normal({2, 3, 7, 8})}; },
                 .fn = [=](const Ins& in) { return std::get<0>(max_pool2d_with_indices(in[0], mo)); },
                 .ref = [=](const Vals& v) { return pool_ref(v[0], c.k, c.s, c.p, c.d, c.ceil, 0); }});
    t.push_back({.family = "pool", .name = "max_pool2d_with_indices indices" + tag.str(), .make = [] { return Ins{normal({2, 3, 7, 8})}; },
                 .fn = [=](const Ins& in) { return std::get<1>(max_pool2d_with_indices(in[0], mo)); },
                 .ref = [=](const Vals& v) { return pool_ref(v[0], c.k, c.s, c.p, c.d, c.ceil, 3); }, .grad = false});
    if (c.d == 1)
      for (bool cip : {true, false}) {
        const AvgPool2dOptions ao{.kernel_size = c.k, .stride = c.s, .padding = c.p, .ceil_mode = c.ceil, .count_include_pad = cip};
        t.push_back({.family = "pool", .name = "avg_pool2d" + tag.str() + (cip ? " count_include_pad" : ""),
                     .make = [] { return Ins{normal({2, 3, 7, 8})}; },
                     .fn = [=](const Ins& in) { return avg_pool2d(in[0], ao); },
                     .ref = [=](const Vals& v) { return pool_ref(v[0], c.k, c.s, c.p, 1, c.ceil, cip ? 1 : 2); }});
      }
  }
  t.push_back({.family = "pool", .name = "max_pool2d of (C, H, W)", .make = [] { return Ins{normal({3, 4, 5})}; },
               .fn = [](const Ins& in) { return max_pool2d(in[0], {.kernel_size = 2}); },
               .ref = [](const Vals& v) { return pool_ref(v[0], 2, 2, 0, 1, false, 0); }});
  for (auto [H, W, oh, ow] : std::vector<std::array<int64_t, 4>>{{7, 5, 3, 2}, {4, 4, 4, 4}, {6, 5, 1, 1}}) {
    std::ostringstream tag;
    tag << "adaptive_avg_pool2d " << H << "x" << W << " -> " << oh << "x" << ow;
    t.push_back({.family = "pool", .name = tag.str(), .make = [H = H, W = W] { return Ins{normal({2, 2, H, W})}; },
                 .fn = [oh = oh, ow = ow](const Ins& in) { return adaptive_avg_pool2d(in[0], {oh, ow}); },
                 .ref = [oh = oh, ow = ow](const Vals& v) { return adaptive_avg_ref(v[0], oh, ow); }});
  }
  t.back().bad = {
      {[] { max_pool2d(ones({4, 4}), {.kernel_size = 2}); }, {"max_pool2d", "(N, C, H, W)", "[4, 4]"}},
      {[] { max_pool2d(ones({1, 1, 4, 4}), {.kernel_size = 2, .padding = 2}); }, {"max_pool2d", "padding", "half"}},
      {[] { max_pool2d(ones({1, 1, 2, 2}), {.kernel_size = 3}); }, {"max_pool2d", "larger than the padded input"}},
      {[] { max_pool2d(ones({1, 1, 4, 4}), {.kernel_size = 2, .stride = 0}); }, {"max_pool2d", "stride"}},
      {[] { avg_pool2d(ones({1, 1, 4, 4}, kInt64), {.kernel_size = 2}); }, {"avg_pool2d", "floating"}},
      {[] { adaptive_avg_pool2d(ones({1, 1, 4, 4}), {0, 2}); }, {"adaptive_avg_pool2d", "positive"}},
  };
  // batch_norm: training (batch statistics; the running ones are updated but do not enter the
  // output), eval (the running statistics), and without affine parameters
  auto bn_inputs = [] {
    return Ins{normal({4, 3, 2, 5}), uniform({3}, 0.5, 1.5), normal({3}), uniform({3}, -0.5, 0.5), uniform({3}, 0.5, 2.0)};
  };
  t.push_back({.family = "norm", .name = "batch_norm training", .make = bn_inputs,
               .fn = [](const Ins& in) { return batch_norm(in[0], in[3], in[4], in[1], in[2], true, 0.1, 1e-5); },
               .ref = [](const Vals& v) { return batch_norm_ref(v[0], &v[1], &v[2], nullptr, nullptr); },
               .tol32 = 1e-3, .fixed = {3, 4}});
  t.push_back({.family = "norm", .name = "batch_norm eval", .make = bn_inputs,
               .fn = [](const Ins& in) { return batch_norm(in[0], in[3], in[4], in[1], in[2], false, 0.1, 1e-5); },
               .ref = [](const Vals& v) { return batch_norm_ref(v[0], &v[1], &v[2], &v[3], &v[4]); },
               .fixed = {3, 4}});
  t.push_back({.family = "norm", .name = "batch_norm training, no affine, no running statistics",
               .make = [] { return Ins{normal({5, 2, 3})}; },
               .fn = [](const Ins& in) { return batch_norm(in[0], {}, {}, {}, {}, true); },
               .ref = [](const Vals& v) { return batch_norm_ref(v[0], nullptr, nullptr, nullptr, nullptr); }, .tol32 = 1e-3});
  t.back().bad = {
      {[] { batch_norm(ones({4}), {}, {}, {}, {}, true); }, {"batch_norm", "(N, C, ...)"}},
      {[] { batch_norm(ones({2, 3}), {}, {}, ones({4}), {}, true); }, {"batch_norm", "[4]", "3 channels"}},
      {[] { batch_norm(ones({1, 3}), {}, {}, {}, {}, true); }, {"batch_norm", "more than 1 value"}},
      {[] { batch_norm(ones({2, 3}), {}, {}, {}, {}, false); }, {"batch_norm", "running_mean"}},
  };
  return t;
}

// ---- convolution ----

struct ConvCfg {
  int64_t N, C, H, W, Cout, kh, kw;
  Pair2 stride, dilation;
  Padding2 padding;
  int64_t groups;
};

// The direct 7-loop convolution.
Values conv_ref(const Values& x, const Values& w, const Values* b, const ConvCfg& c) {
  int64_t pt = c.padding.h, pl = c.padding.w, th = 2 * pt, tw = 2 * pl;
  if (c.padding.mode == Padding2::Mode::Same) {
    th = c.dilation.h * (c.kh - 1);
    tw = c.dilation.w * (c.kw - 1);
    pt = th / 2;
    pl = tw / 2;
  }
  if (c.padding.mode == Padding2::Mode::Valid) pt = pl = th = tw = 0;
  const int64_t Ho = (c.H + th - c.dilation.h * (c.kh - 1) - 1) / c.stride.h + 1;
  const int64_t Wo = (c.W + tw - c.dilation.w * (c.kw - 1) - 1) / c.stride.w + 1;
  const int64_t Cg = c.C / c.groups, Og = c.Cout / c.groups;
  Values r{{c.N, c.Cout, Ho, Wo}, std::vector<double>(size_t(c.N * c.Cout * Ho * Wo))};
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.Cout; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double s = b ? (*b)[o] : 0.0;
          const int64_t g = o / Og;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t ki = 0; ki < c.kh; ++ki)
              for (int64_t kj = 0; kj < c.kw; ++kj) {
                const int64_t ih = oh * c.stride.h - pt + ki * c.dilation.h, iw = ow * c.stride.w - pl + kj * c.dilation.w;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                s += x[((n * c.C + g * Cg + ci) * c.H + ih) * c.W + iw] * w[((o * Cg + ci) * c.kh + ki) * c.kw + kj];
              }
          r.v[size_t(((n * c.Cout + o) * Ho + oh) * Wo + ow)] = s;
        }
  return r;
}

const std::vector<ConvCfg> kConvCases = {
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 0, 1},                 // plain
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1},                 // padding 1
    {2, 4, 9, 8, 6, 3, 2, {2, 1}, 1, {1, 2}, 2},       // stride, asymmetric kernel, groups
    {1, 2, 9, 9, 2, 3, 3, 1, 2, 2, 1},                 // dilation
    {2, 4, 6, 5, 4, 2, 3, 1, {1, 2}, "same", 4},       // "same" with an even kernel, depthwise
    {2, 3, 5, 5, 2, 5, 5, 1, 1, "valid", 1},           // kernel = input
    {3, 4, 5, 4, 6, 1, 1, 1, 1, 0, 2},                 // 1x1: no columns
    {2, 3, 8, 8, 4, 1, 1, 2, 1, 0, 1},                 // 1x1 with stride: columns
    {2, 3, 5, 19, 11, 3, 3, 1, 1, 1, 1},               // rows wider than a register block, 8+3 outputs
    {1, 2, 6, 7, 3, 2, 3, 1, {2, 1}, {3, 1}, 1},       // padding beyond the dilated kernel
    // 16+ output channels per group: the direct algorithm's channel-blocked kernels
    {1, 2, 4, 5, 17, 3, 3, 1, 1, 1, 1},                // 16+1 outputs, rows narrower than a block
    {1, 17, 4, 3, 2, 2, 2, 1, 1, "same", 1},           // 17 inputs: a blocked data gradient, even kernel
    // 3x3 with padding 2 and odd sizes; a 3x3 plane and kernel (one output)
    {2, 3, 6, 7, 5, 3, 3, 1, 1, 2, 1},
    {1, 2, 3, 3, 3, 3, 3, 1, 1, 0, 1},
};

std::vector<OpCase> conv_cases() {
  std::vector<OpCase> t;
  for (size_t ci = 0; ci < kConvCases.size(); ++ci) {
    const ConvCfg c = kConvCases[ci];
    const Conv2dOptions o{.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups};
    t.push_back({.family = "conv2d", .name = "conv2d case " + std::to_string(ci),
                 .make = [=] { return Ins{normal({c.N, c.C, c.H, c.W}), normal({c.Cout, c.C / c.groups, c.kh, c.kw}), normal({c.Cout})}; },
                 .fn = [=](const Ins& in) { return conv2d(in[0], in[1], in[2], o); },
                 .ref = [=](const Vals& v) { return conv_ref(v[0], v[1], &v[2], c); }, .tol = 1e-12});
    if (ci < 4 || ci == 6)  // without a bias
      t.push_back({.family = "conv2d", .name = "conv2d case " + std::to_string(ci) + " without bias",
                   .make = [=] { return Ins{normal({c.N, c.C, c.H, c.W}), normal({c.Cout, c.C / c.groups, c.kh, c.kw})}; },
                   .fn = [=](const Ins& in) { return conv2d(in[0], in[1], {}, o); },
                   .ref = [=](const Vals& v) { return conv_ref(v[0], v[1], nullptr, c); }, .tol = 1e-12});
  }
  // a weight held constant: only x gets a gradient
  t.push_back({.family = "conv2d", .name = "conv2d with a constant weight",
               .make = [] { return Ins{normal({2, 3, 5, 5}), normal({4, 3, 3, 3})}; },
               .fn = [](const Ins& in) { return conv2d(in[0], in[1], {}, {.padding = 1}); },
               .ref = [](const Vals& v) { return conv_ref(v[0], v[1], nullptr, {2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1}); },
               .tol = 1e-12, .fixed = {1}});
  const Tensor x = ones({2, 3, 5, 5}), w = ones({4, 3, 3, 3});
  t.back().bad = {
      {[=] { conv2d(x, ones({4, 2, 3, 3})); }, {"conv2d", "3 channels", "[4, 2, 3, 3]", "expects 2"}},
      {[=] { conv2d(x, ones({4, 3, 7, 7})); }, {"conv2d", "larger than the padded input", "5x5"}},
      {[=] { conv2d(x, w, {}, {.stride = 0}); }, {"conv2d", "stride", "positive"}},
      {[=] { conv2d(x, ones({4, 1, 3, 3}), {}, {.groups = 2}); }, {"conv2d", "groups=2", "3 input channels"}},
      {[=] { conv2d(x, w, {}, {.groups = 0}); }, {"conv2d", "groups"}},
      {[=] { conv2d(ones({3, 5, 5}), w); }, {"conv2d", "(N, C, H, W)", "[3, 5, 5]"}},
      {[=] { conv2d(x, w, ones({5})); }, {"conv2d", "bias", "[5]"}},
      {[=] { conv2d(x, ones({4, 3, 3, 3}, kFloat64)); }, {"conv2d", "float32", "float64"}},
      {[=] { conv2d(x, w, {}, {.stride = 2, .padding = "same"}); }, {"conv2d", "same", "stride 1"}},
      {[=] { conv2d(x, w, {}, {.padding = -1}); }, {"conv2d", "padding"}},
      {[] { Padding2("full"); }, {"padding", "full"}},
  };

  struct TCfg { int64_t N, Cin, H, W, Cog, kh, kw; Pair2 s, p, op, d; int64_t g; };
  const std::vector<TCfg> tcases = {
      {2, 4, 3, 4, 3, 3, 3, 2, 1, 1, 1, 2},
      {1, 2, 4, 3, 2, 2, 3, {1, 2}, 0, {0, 1}, 1, 1},
      {2, 3, 3, 3, 2, 3, 2, 1, {1, 0}, 0, 2, 1},
      {2, 4, 5, 6, 3, 3, 3, 1, 1, 0, 1, 2},  // stride 1, groups: the direct algorithm's case
  };
  for (size_t ci = 0; ci < tcases.size(); ++ci) {
    const TCfg c = tcases[ci];
    const ConvTranspose2dOptions o{.stride = c.s, .padding = c.p, .output_padding = c.op, .dilation = c.d, .groups = c.g};
    t.push_back({.family = "conv2d", .name = "conv_transpose2d case " + std::to_string(ci),
                 .make = [=] { return Ins{normal({c.N, c.Cin, c.H, c.W}), normal({c.Cin, c.Cog, c.kh, c.kw}), normal({c.Cog * c.g})}; },
                 .fn = [=](const Ins& in) { return conv_transpose2d(in[0], in[1], in[2], o); },
                 .ref = [=](const Vals& v) {
                   // the direct scatter of every input pixel through the kernel
                   const int64_t Ho = (c.H - 1) * c.s.h - 2 * c.p.h + c.d.h * (c.kh - 1) + c.op.h + 1;
                   const int64_t Wo = (c.W - 1) * c.s.w - 2 * c.p.w + c.d.w * (c.kw - 1) + c.op.w + 1;
                   const int64_t Cout = c.Cog * c.g, Cig = c.Cin / c.g;
                   Values r{{c.N, Cout, Ho, Wo}, std::vector<double>(size_t(c.N * Cout * Ho * Wo))};
                   for (int64_t i = 0; i < r.numel(); ++i) r.v[size_t(i)] = v[2][(i / (Ho * Wo)) % Cout];
                   for (int64_t n = 0; n < c.N; ++n)
                     for (int64_t ci2 = 0; ci2 < c.Cin; ++ci2)
                       for (int64_t co = 0; co < c.Cog; ++co)
                         for (int64_t ih = 0; ih < c.H; ++ih)
                           for (int64_t iw = 0; iw < c.W; ++iw)
                             for (int64_t ki = 0; ki < c.kh; ++ki)
                               for (int64_t kj = 0; kj < c.kw; ++kj) {
                                 const int64_t oh = ih * c.s.h - c.p.h + ki * c.d.h, ow = iw * c.s.w - c.p.w + kj * c.d.w;
                                 if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                                 const int64_t oc = (ci2 / Cig) * c.Cog + co;
                                 r.v[size_t(((n * Cout + oc) * Ho + oh) * Wo + ow)] +=
                                     v[0][((n * c.Cin + ci2) * c.H + ih) * c.W + iw] * v[1][((ci2 * c.Cog + co) * c.kh + ki) * c.kw + kj];
                               }
                   return r;
                 }, .tol = 1e-12});
  }
  t.back().bad = {
      {[] { conv_transpose2d(ones({1, 3, 4, 4}), ones({2, 2, 3, 3})); }, {"conv_transpose2d", "3 channels", "expects 2"}},
      {[] { conv_transpose2d(ones({1, 2, 4, 4}), ones({2, 2, 3, 3}), {}, {.stride = 2, .output_padding = 2}); },
       {"conv_transpose2d", "output_padding"}},
      {[] { conv_transpose2d(ones({1, 2, 1, 1}), ones({2, 2, 2, 2}), {}, {.padding = 2}); }, {"conv_transpose2d", "empty output"}},
  };
  return t;
}

std::vector<OpCase> unfold_cases() {
  std::vector<OpCase> t;
  const UnfoldOptions o{.kernel_size = {2, 3}, .stride = {1, 2}, .padding = {1, 0}, .dilation = {2, 1}};
  const int64_t Ho = 6, Wo = 3;  // (6 + 2 - 2 - 1) / 1 + 1, (7 - 3) / 2 + 1
  auto cols_of = [=](const Values& x, bool adjoint, const Values* y) {
    // unfold: cols[n, (c*2+ki)*3+kj, oh*Wo+ow] = x[n, c, oh-1+2ki, 2ow+kj] (0 outside);
    // fold (adjoint): out[n, c, ih, iw] += y[n, row, col] over the same pairs
    Values r = adjoint ? Values{{2, 3, 6, 7}, std::vector<double>(2 * 3 * 42)} : Values{{2, 18, Ho * Wo}, {}};
    if (!adjoint) r.v.assign(size_t(2 * 18 * Ho * Wo), 0.0);
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ki = 0; ki < 2; ++ki)
          for (int64_t kj = 0; kj < 3; ++kj)
            for (int64_t oh = 0; oh < Ho; ++oh)
              for (int64_t ow = 0; ow < Wo; ++ow) {
                const int64_t ih = oh - 1 + 2 * ki, iw = ow * 2 + kj;
                if (ih < 0 || ih >= 6 || iw >= 7) continue;
                const int64_t col = (n * 18 + (c * 2 + ki) * 3 + kj) * Ho * Wo + oh * Wo + ow, px = ((n * 3 + c) * 6 + ih) * 7 + iw;
                if (adjoint) r.v[size_t(px)] += (*y)[col];
                else r.v[size_t(col)] = x[px];
              }
    return r;
  };
  t.push_back({.family = "unfold", .name = "unfold", .make = [] { return Ins{normal({2, 3, 6, 7})}; },
               .fn = [=](const Ins& in) { return unfold(in[0], o); },
               .ref = [=](const Vals& v) { return cols_of(v[0], false, nullptr); }, .tol = 0});
  t.push_back({.family = "unfold", .name = "fold", .make = [=] { return Ins{normal({2, 18, Ho * Wo})}; },
               .fn = [=](const Ins& in) { return fold(in[0], {6, 7}, o); },
               .ref = [=](const Vals& v) { return cols_of(v[0], true, &v[0]); }, .tol = 1e-12});
  t.back().bad = {
      {[] { unfold(ones({1, 1, 2, 2}), {.kernel_size = 3}); }, {"unfold", "larger than the padded input"}},
      {[] { unfold(ones({1, 1, 4, 4}), {.kernel_size = 2, .stride = 0}); }, {"unfold", "stride"}},
      {[] { unfold(ones({4, 4}), {.kernel_size = 2}); }, {"unfold", "(N, C, H, W)"}},
      {[] { fold(ones({1, 5, 9}), {4, 4}, {.kernel_size = 2}); }, {"fold", "multiple of the kernel"}},
      {[] { fold(ones({1, 4, 8}), {4, 4}, {.kernel_size = 2}); }, {"fold", "8 columns", "9 positions"}},
  };
  return t;
}

std::vector<OpCase> view_cases() {
  const Shape s{2, 3, 4};
  auto view_case = [&](const char* name, std::function<Tensor(const Tensor&)> op, Shape out,
                       std::function<Shape(const Shape&)> src) {
    return OpCase{.family = "view", .name = name, .make = [=] { return Ins{normal(s)}; },
                  .fn = [=](const Ins& in) { return op(in[0]); },
                  .ref = [=](const Vals& v) { return index_map(v[0], out, src); }, .tol = 0, .tol32 = 1e-7};
  };
  auto flat = [](const Shape& shape) {  // element i of a flattening of x into `shape`
    return [=](const Shape& i) { return unravel(ravel(i, shape), Shape{2, 3, 4}); };
  };
  std::vector<OpCase> t = {
      view_case("view", [](const Tensor& x) { return x.view({4, 6}); }, {4, 6}, flat({4, 6})),
      view_case("reshape of a permuted view", [](const Tensor& x) { return x.permute({2, 0, 1}).reshape({-1}); }, {24},
                [](const Shape& i) { Shape p = unravel(i[0], {4, 2, 3}); return Shape{p[1], p[2], p[0]}; }),
      view_case("permute", [](const Tensor& x) { return x.permute({1, 2, 0}); }, {3, 4, 2},
                [](const Shape& i) { return Shape{i[2], i[0], i[1]}; }),
      view_case("transpose", [](const Tensor& x) { return x.transpose(0, 2); }, {4, 3, 2},
                [](const Shape& i) { return Shape{i[2], i[1], i[0]}; }),
      view_case("narrow", [](const Tensor& x) { return x.narrow(1, 1, 2); }, {2, 2, 4},
                [](const Shape& i) { return Shape{i[0], i[1] + 1, i[2]}; }),
      view_case("slice with a step", [](const Tensor& x) { return x.slice(2, 1, 4, 2); }, {2, 3, 2},
                [](const Shape& i) { return Shape{i[0], i[1], 1 + 2 * i[2]}; }),
      view_case("select", [](const Tensor& x) { return x.select(1, 2); }, {2, 4},
                [](const Shape& i) { return Shape{i[0], 2, i[1]}; }),
      view_case("operator[]", [](const Tensor& x) { return x[1]; }, {3, 4}, [](const Shape& i) { return Shape{1, i[0], i[1]}; }),
      view_case("expand", [](const Tensor& x) { return x.narrow(2, 0, 1).expand({5, 2, 3, 4}); }, {5, 2, 3, 4},
                [](const Shape& i) { return Shape{i[1], i[2], 0}; }),
      view_case("squeeze", [](const Tensor& x) { return x.narrow(1, 0, 1).squeeze(1); }, {2, 4},
                [](const Shape& i) { return Shape{i[0], 0, i[1]}; }),
      view_case("unsqueeze", [](const Tensor& x) { return x.unsqueeze(0).unsqueeze(-1); }, {1, 2, 3, 4, 1},
                [](const Shape& i) { return Shape{i[1], i[2], i[3]}; }),
      view_case("flatten", [](const Tensor& x) { return x.flatten(0, 1); }, {6, 4}, flat({6, 4})),
      view_case("contiguous", [](const Tensor& x) { return x.transpose(0, 1).contiguous(); }, {3, 2, 4},
                [](const Shape& i) { return Shape{i[1], i[0], i[2]}; }),
      view_case("clone", [](const Tensor& x) { return x.clone(); }, {2, 3, 4}, [](const Shape& i) { return i; }),
  };
  // a round trip through float32 (not a float32 pass of its own: the output is float64 by design)
  t.push_back({.family = "view", .name = "to(float32) and back",
               .make = [] { return Ins{normal({2, 3})}; },
               .fn = [](const Ins& in) { return mul(in[0].to(kFloat32), 2.0).to(kFloat64); },
               .ref = [](const Vals& v) { return map1(v[0], [](double x) { return double(float(x)) * 2.0; }); },
               .tol = 0, .f32 = false, .gradcheck = {.eps = 1e-3, .atol = 1e-3}});
  t.back().bad = {
      {[] { ones({2, 3}).view({4}); }, {"view", "[2, 3]", "[4]"}},
      {[] { ones({2, 3}).permute({0, 0}); }, {"permute"}},
      {[] { ones({2, 3}).narrow(1, 2, 2); }, {"narrow"}},
      {[] { ones({2, 3}).expand({3, 3}); }, {"expand", "[2, 3]", "[3, 3]"}},
  };
  return t;
}

const std::vector<OpCase>& op_table() {
  static const std::vector<OpCase> table = [] {
    std::vector<OpCase> t;
    for (auto part : {unary_cases(), binary_cases(), compare_cases(), reduce_cases(), linalg_cases(),
                      softmax_loss_cases(), pool_norm_cases(), conv_cases(), unfold_cases(), view_cases()})
      t.insert(t.end(), part.begin(), part.end());
    return t;
  }();
  return table;
}

}  // namespace

TEST_CASE("op table: unary") { run_op_family(op_table(), "unary"); }
TEST_CASE("op table: binary, broadcasting as PyTorch") { run_op_family(op_table(), "binary"); }
TEST_CASE("op table: comparisons and where") { run_op_family(op_table(), "compare"); }
TEST_CASE("op table: reductions") { run_op_family(op_table(), "reduce"); }
TEST_CASE("op table: mm, bmm, matmul") { run_op_family(op_table(), "linalg"); }
TEST_CASE("op table: softmax, log_softmax") { run_op_family(op_table(), "softmax"); }
TEST_CASE("op table: gather") { run_op_family(op_table(), "gather"); }
TEST_CASE("op table: losses") { run_op_family(op_table(), "loss"); }
TEST_CASE("op table: pooling") { run_op_family(op_table(), "pool"); }
TEST_CASE("op table: batch_norm") { run_op_family(op_table(), "norm"); }
TEST_CASE("op table: unfold, fold") { run_op_family(op_table(), "unfold"); }
TEST_CASE("op table: views, clone, dtype casts") { run_op_family(op_table(), "view"); }

// conv2d and conv_transpose2d at every ISA level, for every CPU algorithm, and (unfold + GEMM)
// for workspaces of one image, a few images and all of them.
TEST_CASE("op table: conv2d and conv_transpose2d, every algorithm and workspace") {
  const size_t saved = conv_workspace_limit();
  for_each_cpu_isa([&] {
    for (ConvAlgorithm a : {ConvAlgorithm::Gemm, ConvAlgorithm::Direct, ConvAlgorithm::Auto}) {
      CAPTURE(int(a));
      set_conv_algorithm(a);
      for (size_t limit : {size_t(1), size_t(600 * 8), size_t(64) << 20}) {
        if (a != ConvAlgorithm::Gemm && limit != (size_t(64) << 20)) continue;
        CAPTURE(limit);
        set_conv_workspace_limit(limit);
        run_op_family(op_table(), "conv2d", {.every_isa = false});
      }
    }
  });
  set_conv_algorithm(ConvAlgorithm::Auto);
  set_conv_workspace_limit(saved);
}
