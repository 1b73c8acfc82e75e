// minigrad: 2-D pooling.
#pragma once
#include <optional>
#include <tuple>

#include "conv.h"

namespace minigrad {

struct MaxPool2dOptions {
  Pair2 kernel_size = 1;
  std::optional<Pair2> stride;  // defaults to kernel_size
  Pair2 padding = 0;
  Pair2 dilation = 1;
  bool ceil_mode = false;
};
struct AvgPool2dOptions {
  Pair2 kernel_size = 1;
  std::optional<Pair2> stride;  // defaults to kernel_size
  Pair2 padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;
};

// x (N, C, H, W) or (C, H, W).
Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& opts);
// (values, indices); indices are flat positions h*W + w within each plane, as in PyTorch.
std::tuple<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, const MaxPool2dOptions& opts);
Tensor avg_pool2d(const Tensor& x, const AvgPool2dOptions& opts);
Tensor adaptive_avg_pool2d(const Tensor& x, Pair2 output_size);

}  // namespace minigrad
