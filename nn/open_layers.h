// minigrad: layers built on the open convolution, each a worked example of its hooks
// (docs/open-conv.md).
#pragma once
#include <memory>
#include <ostream>
#include <typeinfo>

#include "../ops/conv.h"
#include "../ops/open_conv.h"
#include "layers.h"
#include "module.h"

namespace minigrad::nn {

// A layer for any combine functor (and optionally a user reduce functor): weight and bias
// initialised as Conv2d's, options (hooks included) passed to open_conv2d.
//   nn::OpenConv2d<Huber> layer(16, 32, 3, {.padding = 1});
template <class Combine, class ReduceFn = reduce::Sum>
class OpenConv2d : public Module {
 public:
  OpenConv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, OpenConv2dOptions opts = {},
             bool with_bias = true, Combine comb = {}, ReduceFn red = {})
      : Module("OpenConv2d"), options(std::move(opts)), combine_(comb), reduce_(red) {
    detail::make_conv_weight(*this, "OpenConv2d", in_channels, out_channels, kernel_size, options.groups,
                             with_bias, weight, bias);
  }
  Tensor forward(const Tensor& x) override {
    if constexpr (std::is_same_v<ReduceFn, reduce::Sum>) return open_conv2d(x, weight, bias, combine_, options);
    else return open_conv2d(x, weight, bias, combine_, reduce_, options);
  }
  void pretty_print(std::ostream& os) const override {
    os << "OpenConv2d<" << autograd::detail::demangle(typeid(Combine).name()) << ">(" << weight.size(1) * options.groups
       << ", " << weight.size(0) << ", kernel_size=(" << weight.size(2) << ", " << weight.size(3) << "))";
  }
  Tensor weight, bias;
  OpenConv2dOptions options;

 private:
  Combine combine_;
  ReduceFn reduce_;
};

// AdderNet (Chen et al., CVPR 2020): y = -sum |x - w|, with the paper's backward (HardTanh-clipped
// dX, full-precision dW = x - w), its adaptive learning-rate scaling (each backward rescales the
// weight's gradient to eta * sqrt(numel) / ||grad||) and a BatchNorm2d after the adder.
struct AdderConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  bool bias = false;
  double eta = 0.1;         // adaptive learning-rate scaling; 0 turns it off
  bool batch_norm = true;   // BatchNorm2d(out_channels) after the adder
};
class AdderConv2d : public Module {
 public:
  AdderConv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, AdderConv2dOptions opts = {});
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
  std::shared_ptr<BatchNorm2d> bn;
  AdderConv2dOptions options;
};

// Morphological layers: dilation max_k (x + w), erosion min_k (x - w).
enum class Morphology { Dilation, Erosion };
struct MorphConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  Morphology type = Morphology::Dilation;
  bool bias = false;
};
class MorphConv2d : public Module {
 public:
  MorphConv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, MorphConv2dOptions opts = {});
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
  MorphConv2dOptions options;
};

// Kervolution (Wang et al., CVPR 2019): polynomial (x.w + c)^degree, an output hook on the GEMM
// convolution; Gaussian exp(-gamma ||x - w||^2), an output hook on the separable L2 combine.
enum class Kervolution { Polynomial, Gaussian };
struct KernelConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  Kervolution kernel = Kervolution::Polynomial;
  int64_t degree = 2;   // polynomial
  double c = 1.0;       // polynomial
  double gamma = 1.0;   // Gaussian
  bool bias = true;
};
class KernelConv2d : public Module {
 public:
  KernelConv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, KernelConv2dOptions opts = {});
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias;
  KernelConv2dOptions options;
};

// Sharpened cosine similarity: s = <x / (||x|| + q^2), w / ||w||> per patch and output channel
// (a patch hook and a weight hook around the GEMM convolution), then sign(s) |s|^p (an output
// hook). p (one per output channel) and q are learned; q lives inside the patch hook and gets its
// gradient through the per-tile recomputation.
struct SCSConv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
  double p_init = 2.0;
  double q_init = 0.3;
  double eps = 1e-6;
  bool bias = false;
};
class SCSConv2d : public Module {
 public:
  SCSConv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, SCSConv2dOptions opts = {});
  Tensor forward(const Tensor& x) override;
  void pretty_print(std::ostream& os) const override;
  Tensor weight, bias, p, q;
  SCSConv2dOptions options;
};

}  // namespace minigrad::nn
