// One table of op cases and one runner for all of them (as ggml's test-backend-ops).
//
// An OpCase names an op once: how to make its inputs, how to call it, and a naive reference that
// computes the expected values from the inputs' values with plain loops. run_op_case then checks,
// on every device this build has (and at every CPU ISA level):
//   - the float64 forward against the reference, and the output's shape;
//   - the float32 forward against the reference (a looser tolerance), and that it stays float32;
//   - non-contiguous inputs (every input seen through a stride-2 view) give the same values and
//     the same gradients;
//   - gradcheck: backward against float64 central differences;
//   - every device's values and gradients against the CPU's;
//   - the bad calls: each throws minigrad::Error with every listed fragment in its message.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "helpers.h"

namespace mgtest {

// A tensor's values in row-major order with its shape: what the references read and write.
struct Values {
  Shape shape;
  std::vector<double> v;
  int64_t numel() const { return int64_t(v.size()); }
  double operator[](int64_t i) const { return v[size_t(i)]; }
};

struct BadCall {
  std::function<void()> call;
  std::vector<std::string> fragments;  // each must appear in the error message
};

struct OpCase {
  std::string family;  // the TEST_CASE that runs it ("unary", "conv", ...)
  std::string name;    // shown when a check fails
  // The inputs, on the CPU: float64 tensors (the differentiable ones, cast to float32 for that
  // pass) and integer ones (indices, labels, masks), which are moved but never cast or differentiated.
  std::function<std::vector<Tensor>()> make;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  std::function<Values(const std::vector<Values>&)> ref;
  double tol = 1e-10;    // relative, float64
  double tol32 = 1e-4;   // relative, float32
  bool grad = true;      // false: the output is not differentiable (indices, comparisons)
  bool f32 = true;       // false: no float32 pass
  std::vector<size_t> fixed;  // float inputs held constant: not differentiated (targets, statistics)
  GradcheckOptions gradcheck{};
  std::vector<BadCall> bad;
};

struct RunOptions {
  bool every_isa = true;  // repeat the CPU checks at every ISA level (off when the caller loops them)
};

void run_op_case(const OpCase& c, const RunOptions& o = {});
// Every case of `family` in the table (tests/test_ops.cpp), in order.
void run_op_family(const std::vector<OpCase>& table, const std::string& family, const RunOptions& o = {});

// Input makers: float64 CPU tensors, uniform in [lo, hi) or standard normal; int64 ones from values.
Tensor uniform(const Shape& s, double lo, double hi);
Tensor normal(const Shape& s);
Tensor ints(const std::vector<int64_t>& v, const Shape& s);

// The differentiable, non-contiguous view of t that run_op_case feeds ops: the same shape and
// values, every stride doubled (t is multiplied into a trailing pair and one half selected).
Tensor strided_view(const Tensor& t);

}  // namespace mgtest
