#include "open_layers.h"

#include <cmath>

#include "../core/autograd.h"
#include "../ops/open_conv.h"
#include "../ops/ops.h"

namespace minigrad::nn {

namespace {
using detail::make_conv_weight;
using detail::print_conv_geometry;

template <class O>
OpenConv2dOptions geometry(const O& o) {
  OpenConv2dOptions oc;
  oc.stride = o.stride, oc.padding = o.padding, oc.dilation = o.dilation, oc.groups = o.groups;
  return oc;
}

}  // namespace

AdderConv2d::AdderConv2d(int64_t in, int64_t out, Pair2 k, AdderConv2dOptions o) : Module("AdderConv2d"), options(o) {
  make_conv_weight(*this, "AdderConv2d", in, out, k, o.groups, o.bias, weight, bias);
  MG_CHECK(o.eta >= 0, "AdderConv2d: eta must be >= 0 (0 turns the adaptive learning-rate scaling off), got ", o.eta);
  if (o.eta > 0) {
    // The paper's adaptive learning rate: the local gradient is rescaled to eta * sqrt(k) / ||g||
    // (k = number of weights), so every adder layer moves at a similar pace.
    const double scale = o.eta * std::sqrt(double(weight.numel()));
    weight.register_hook([scale](const Tensor& g) {
      NoGradGuard ng;
      return mul(div(g, add(sqrt(sum(mul(g, g))), 1e-12)), scale);
    });
  }
  if (o.batch_norm) bn = register_module("bn", std::make_shared<BatchNorm2d>(out));
}

Tensor AdderConv2d::forward(const Tensor& x) {
  Tensor y = open_conv2d(x, weight, bias, combine::Adder{}, geometry(options));
  return bn ? bn->forward(y) : y;
}

void AdderConv2d::pretty_print(std::ostream& os) const {
  print_conv_geometry(os, "AdderConv2d", weight, options.groups, options.stride, options.padding);
  os << ", eta=" << options.eta << (bn ? ", batch_norm" : "") << ")";
}

MorphConv2d::MorphConv2d(int64_t in, int64_t out, Pair2 k, MorphConv2dOptions o) : Module("MorphConv2d"), options(o) {
  make_conv_weight(*this, "MorphConv2d", in, out, k, o.groups, o.bias, weight, bias);
}

Tensor MorphConv2d::forward(const Tensor& x) {
  OpenConv2dOptions oc = geometry(options);
  if (options.type == Morphology::Dilation) {
    oc.reduce = Reduce::Max;
    return open_conv2d(x, weight, bias, combine::Add{}, oc);
  }
  oc.reduce = Reduce::Min;
  return open_conv2d(x, weight, bias, combine::Sub{}, oc);
}

void MorphConv2d::pretty_print(std::ostream& os) const {
  print_conv_geometry(os, "MorphConv2d", weight, options.groups, options.stride, options.padding);
  os << ", " << (options.type == Morphology::Dilation ? "dilation" : "erosion") << ")";
}

KernelConv2d::KernelConv2d(int64_t in, int64_t out, Pair2 k, KernelConv2dOptions o)
    : Module("KernelConv2d"), options(o) {
  make_conv_weight(*this, "KernelConv2d", in, out, k, o.groups, o.bias, weight, bias);
  if (o.kernel == Kervolution::Polynomial)
    MG_CHECK(o.degree >= 1, "KernelConv2d: the polynomial degree must be >= 1, got ", o.degree);
  else
    MG_CHECK(o.gamma > 0, "KernelConv2d: the Gaussian gamma must be > 0, got ", o.gamma);
}

Tensor KernelConv2d::forward(const Tensor& x) {
  OpenConv2dOptions oc = geometry(options);
  if (options.kernel == Kervolution::Polynomial) {
    const double c = options.c, d = double(options.degree);
    oc.output = [c, d](const Tensor& s) { return pow(add(s, c), d); };
    return open_conv2d(x, weight, bias, combine::Mul{}, oc);  // path 1: the GEMM convolution
  }
  const double gamma = options.gamma;
  oc.output = [gamma](const Tensor& s) { return exp(mul(s, gamma)); };  // s = -||x - w||^2
  return open_conv2d(x, weight, bias, combine::L2{}, oc);             // path 2: separable
}

void KernelConv2d::pretty_print(std::ostream& os) const {
  print_conv_geometry(os, "KernelConv2d", weight, options.groups, options.stride, options.padding);
  if (options.kernel == Kervolution::Polynomial) os << ", polynomial(degree=" << options.degree << ", c=" << options.c << "))";
  else os << ", gaussian(gamma=" << options.gamma << "))";
}

SCSConv2d::SCSConv2d(int64_t in, int64_t out, Pair2 k, SCSConv2dOptions o) : Module("SCSConv2d"), options(o) {
  make_conv_weight(*this, "SCSConv2d", in, out, k, o.groups, o.bias, weight, bias);
  MG_CHECK(o.eps > 0, "SCSConv2d: eps must be > 0, got ", o.eps);
  p = register_parameter("p", full({out}, o.p_init));
  q = register_parameter("q", full({1}, o.q_init));
}

Tensor SCSConv2d::forward(const Tensor& x) {
  OpenConv2dOptions oc = geometry(options);
  const int64_t G = options.groups;
  const double eps = options.eps;
  Tensor qv = q;
  oc.patch = [G, eps, qv](const Tensor& cols) {  // (1, G*K, L): normalise each patch within its group
    Tensor c = cols.reshape({cols.size(0), G, cols.size(1) / G, cols.size(2)});
    Tensor norm = add(sqrt(add(sum(mul(c, c), {2}, true), eps)), mul(qv, qv));
    return div(c, norm).reshape(cols.sizes());
  };
  oc.weight = [eps](const Tensor& w) {
    Tensor n = sqrt(add(sum(mul(w, w), {1, 2, 3}, true), eps));
    return div(w, n);
  };
  Tensor pv = p.view({1, -1, 1, 1});
  oc.output = [pv, eps](const Tensor& s) {  // sign(s) |s|^p, smooth at 0: s (|s| + eps)^(p - 1)
    return mul(s, exp(mul(sub(pv, 1.0), log(add(abs(s), eps)))));
  };
  return open_conv2d(x, weight, bias, combine::Mul{}, oc);
}

void SCSConv2d::pretty_print(std::ostream& os) const {
  print_conv_geometry(os, "SCSConv2d", weight, options.groups, options.stride, options.padding);
  os << ")";
}

}  // namespace minigrad::nn
