// minigrad: batch normalisation and dropout.
#pragma once
#include "../core/generator.h"
#include "../core/tensor.h"

namespace minigrad {

// x (N, C, ...). In training, normalises with the batch's statistics and updates running_mean /
// running_var in place (if defined) with `momentum`, as torch's F.batch_norm; in eval, uses them.
// weight and bias (C) may be undefined.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);

// Zeroes each element with probability p and scales the rest by 1/(1-p) when training.
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true, Generator* gen = nullptr);

}  // namespace minigrad
