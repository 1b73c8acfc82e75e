// minigrad: finite-difference gradient checking, for ops, layers and custom Functions.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tensor.h"

namespace minigrad {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  std::string message;  // names the input and element that failed, with both values
};

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 0;   // for the random output cotangent
};

// Compares the gradient backward() computes for each input that requires grad with central
// differences of <v, fn(inputs)> for a random cotangent v. Use float64 inputs (contiguous leaves);
// each element costs two evaluations of fn, so keep shapes small.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opts = {});

}  // namespace minigrad
