#include "layers.h"

#include <cmath>

#include "../core/autograd.h"
#include "../ops/norm.h"
#include "../ops/ops.h"
#include "init.h"

namespace minigrad::nn {

namespace {
// PyTorch's default: weight kaiming_uniform(a = sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void default_init(const Tensor& w, const Tensor& b) {
  init::kaiming_uniform_(w, std::sqrt(5.0));
  if (b.defined()) {
    const double bound = 1.0 / std::sqrt(double(init::calculate_fan_in_and_fan_out(w).first));
    init::uniform_(b, -bound, bound);
  }
}
void check_positive(const char* layer, const char* what, int64_t v) {
  MG_CHECK(v > 0, layer, ": ", what, " must be positive, got ", v);
}
}  // namespace

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
  check_positive("Conv2d", "in_channels", in);
  check_positive("Conv2d", "out_channels", out);
  check_positive("Conv2d", "groups", o.groups);
  MG_CHECK(in % o.groups == 0 && out % o.groups == 0, "Conv2d: groups=", o.groups, " must divide in_channels=",
           in, " and out_channels=", out);
  MG_CHECK(k.h > 0 && k.w > 0, "Conv2d: kernel_size must be positive, got (", k.h, ", ", k.w, ")");
  weight = register_parameter("weight", empty({out, in / o.groups, k.h, k.w}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  default_init(weight, bias);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, options); }

void Conv2d::pretty_print(std::ostream& os) const {
  os << "Conv2d(" << weight.size(1) * options.groups << ", " << weight.size(0) << ", kernel_size=("
     << weight.size(2) << ", " << weight.size(3) << "), stride=(" << options.stride.h << ", "
     << options.stride.w << ")";
  if (options.padding.mode == Padding2::Mode::Same) os << ", padding=same";
  else if (options.padding.h || options.padding.w)
    os << ", padding=(" << options.padding.h << ", " << options.padding.w << ")";
  if (options.groups != 1) os << ", groups=" << options.groups;
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
