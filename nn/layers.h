// minigrad: the standard layers, each a Module over the functional ops.
#pragma once
#include <memory>

#include "../ops/conv.h"
#include "../ops/pool.h"
#include "module.h"

namespace minigrad::nn {

namespace detail {
// PyTorch's default for Linear and convolutions: weight kaiming_uniform(a = sqrt(5)), bias (if
// defined) U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void default_init(const Tensor& w, const Tensor& b);
// Checks the channel counts, groups and kernel (errors name `layer`), registers the weight
// (out, in/groups, kh, kw) and, if asked, the bias on m, with default_init: Conv2d and the
// open-convolution layers.
void make_conv_weight(Module& m, const char* layer, int64_t in, int64_t out, Pair2 k, int64_t groups,
                      bool with_bias, Tensor& weight, Tensor& bias);
// "Layer(in, out, kernel_size=(.., ..), stride=(.., ..)[, padding=..][, groups=..]" without the
// closing parenthesis, for pretty_print.
void print_conv_geometry(std::ostream& os, const char* layer, const Tensor& w, int64_t groups, Pair2 stride,
                         const Padding2& padding);
}  // namespace detail

// y = x Wᵀ + b; weight (out, in). PyTorch's default initialisation.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, minigrad::Conv2dOptions opts = {},
         bool bias = true);
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
  minigrad::Conv2dOptions options;
};

class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size,
                  minigrad::ConvTranspose2dOptions opts = {}, bool bias = true);
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
  minigrad::ConvTranspose2dOptions options;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true);
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(MaxPool2dOptions o) : Module("MaxPool2d"), options(o) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, options); }
  MaxPool2dOptions options;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(AvgPool2dOptions o) : Module("AvgPool2d"), options(o) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, options); }
  AvgPool2dOptions options;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Pair2 size) : Module("AdaptiveAvgPool2d"), output_size(size) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
  Pair2 output_size;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  double p;
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override;
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : Module("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }
  int64_t start_dim, end_dim;
};

// Runs its children in order; they are named "0", "1", ...
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  template <class... M>
  explicit Sequential(std::shared_ptr<M>... modules) : Module("Sequential") {
    (push_back(std::move(modules)), ...);
  }
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> operator[](size_t i) const;
};

}  // namespace minigrad::nn
