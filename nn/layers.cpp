#include "layers.h"

#include <cmath>

#include "../core/autograd.h"
#include "../ops/norm.h"
#include "../ops/ops.h"
#include "init.h"

namespace minigrad::nn {

namespace {
void check_positive(const char* layer, const char* what, int64_t v) {
  MG_CHECK(v > 0, layer, ": ", what, " must be positive, got ", v);
}
}  // namespace

namespace detail {
void default_init(const Tensor& w, const Tensor& b) {
  init::kaiming_uniform_(w, std::sqrt(5.0));
  if (b.defined()) {
    const double bound = 1.0 / std::sqrt(double(init::calculate_fan_in_and_fan_out(w).first));
    init::uniform_(b, -bound, bound);
  }
}

void make_conv_weight(Module& m, const char* layer, int64_t in, int64_t out, Pair2 k, int64_t groups,
                      bool with_bias, Tensor& weight, Tensor& bias) {
  check_positive(layer, "in_channels", in);
  check_positive(layer, "out_channels", out);
  check_positive(layer, "groups", groups);
  MG_CHECK(in % groups == 0 && out % groups == 0, layer, ": groups=", groups, " must divide in_channels=", in,
           " and out_channels=", out);
  MG_CHECK(k.h > 0 && k.w > 0, layer, ": kernel_size must be positive, got (", k.h, ", ", k.w, ")");
  weight = m.register_parameter("weight", empty({out, in / groups, k.h, k.w}));
  if (with_bias) bias = m.register_parameter("bias", empty({out}));
  default_init(weight, bias);
}

void print_conv_geometry(std::ostream& os, const char* layer, const Tensor& w, int64_t groups, Pair2 stride,
                         const Padding2& padding) {
  os << layer << "(" << w.size(1) * groups << ", " << w.size(0) << ", kernel_size=(" << w.size(2) << ", "
     << w.size(3) << "), stride=(" << stride.h << ", " << stride.w << ")";
  if (padding.mode == Padding2::Mode::Same) os << ", padding=same";
  else if (padding.h || padding.w) os << ", padding=(" << padding.h << ", " << padding.w << ")";
  if (groups != 1) os << ", groups=" << groups;
}
}  // namespace detail

using detail::default_init;

Linear::Linear(int64_t in, int64_t out, bool with_bias) : Module("Linear") {
  check_positive("Linear", "in_features", in);
  check_positive("Linear", "out_features", out);
  weight = register_parameter("weight", empty({out, in}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  default_init(weight, bias);
}

Tensor Linear::forward(const Tensor& x) {
  MG_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "Linear: input of shape ", x.sizes(),
           " does not end in in_features=", weight.size(1));
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? add(y, bias) : y;
}

void Linear::pretty_print(std::ostream& os) const {
  os << "Linear(in_features=" << weight.size(1) << ", out_features=" << weight.size(0)
     << ", bias=" << (bias.defined() ? "true" : "false") << ")";
}

Conv2d::Conv2d(int64_t in, int64_t out, Pair2 k, minigrad::Conv2dOptions o, bool with_bias)
    : Module("Conv2d"), options(o) {
  detail::make_conv_weight(*this, "Conv2d", in, out, k, o.groups, with_bias, weight, bias);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, options); }

void Conv2d::pretty_print(std::ostream& os) const {
  detail::print_conv_geometry(os, "Conv2d", weight, options.groups, options.stride, options.padding);
  os << ")";
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, Pair2 k, minigrad::ConvTranspose2dOptions o,
                                 bool with_bias)
    : Module("ConvTranspose2d"), options(o) {
  check_positive("ConvTranspose2d", "in_channels", in);
  check_positive("ConvTranspose2d", "out_channels", out);
  check_positive("ConvTranspose2d", "groups", o.groups);
  MG_CHECK(in % o.groups == 0 && out % o.groups == 0, "ConvTranspose2d: groups=", o.groups,
           " must divide in_channels=", in, " and out_channels=", out);
  weight = register_parameter("weight", empty({in, out / o.groups, k.h, k.w}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  default_init(weight, bias);
}

Tensor ConvTranspose2d::forward(const Tensor& x) { return conv_transpose2d(x, weight, bias, options); }

void ConvTranspose2d::pretty_print(std::ostream& os) const {
  os << "ConvTranspose2d(" << weight.size(0) << ", " << weight.size(1) * options.groups << ", kernel_size=("
     << weight.size(2) << ", " << weight.size(3) << "), stride=(" << options.stride.h << ", "
     << options.stride.w << "))";
}

BatchNorm2d::BatchNorm2d(int64_t c, double eps_, double momentum_, bool affine, bool track)
    : Module("BatchNorm2d"), eps(eps_), momentum(momentum_) {
  check_positive("BatchNorm2d", "num_features", c);
  if (affine) {
    weight = register_parameter("weight", ones({c}));
    bias = register_parameter("bias", zeros({c}));
  }
  if (track) {
    running_mean = register_buffer("running_mean", zeros({c}));
    running_var = register_buffer("running_var", ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, kInt64));
  }
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  MG_CHECK(x.dim() == 4, "BatchNorm2d: expected input of shape (N, C, H, W), got ", x.sizes());
  if (is_training() && num_batches_tracked.defined()) {
    NoGradGuard ng;
    num_batches_tracked.add_(1.0);
  }
  // Without running statistics, eval normalises with the batch's own, as PyTorch does.
  const bool batch_stats = is_training() || !running_mean.defined();
  return batch_norm(x, running_mean, running_var, weight, bias, batch_stats, momentum, eps);
}

void BatchNorm2d::pretty_print(std::ostream& os) const {
  os << "BatchNorm2d(" << (weight.defined() ? weight.size(0) : running_mean.size(0)) << ", eps=" << eps
     << ", momentum=" << momentum << ")";
}

Dropout::Dropout(double p_) : Module("Dropout"), p(p_) {
  MG_CHECK(p >= 0 && p <= 1, "Dropout: probability must be in [0, 1], got ", p);
}
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training()); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

void Sequential::push_back(std::shared_ptr<Module> m) { add_child(std::to_string(size()), std::move(m)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& [n, m] : named_children()) y = m->forward(y);
  return y;
}

std::shared_ptr<Module> Sequential::operator[](size_t i) const {
  MG_CHECK(i < size(), "Sequential: index ", i, " is out of range for ", size(), " modules");
  return named_children()[i].second;
}

}  // namespace minigrad::nn
