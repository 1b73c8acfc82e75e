#include "init.h"

#include <cmath>

#include "../core/autograd.h"
#include "../ops/ops.h"

namespace minigrad::nn::init {

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& w) {
  MG_CHECK(w.dim() >= 2, "init: fan in and fan out need a tensor with at least 2 dims, got ", w.sizes());
  int64_t rf = 1;
  for (int64_t d = 2; d < w.dim(); ++d) rf *= w.size(d);
  return {w.size(1) * rf, w.size(0) * rf};
}

double calculate_gain(Nonlinearity nl, double param) {
  switch (nl) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + param * param));
  }
  return 1.0;
}

namespace {
void assign(const Tensor& t, const Tensor& v) {
  NoGradGuard ng;
  t.detach().copy_(v.to(t.dtype()).to(t.device()));
}
int64_t fan(const Tensor& t, FanMode mode) {
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  int64_t f = mode == FanMode::FanIn ? in : out;
  MG_CHECK(f > 0, "init: zero fan for a tensor of shape ", t.sizes());
  return f;
}
}  // namespace

void uniform_(const Tensor& t, double a, double b, Generator* gen) {
  MG_CHECK(a <= b, "init::uniform_: expected a <= b, got [", a, ", ", b, ")");
  assign(t, add(mul(rand(t.sizes(), kFloat64, gen), b - a), a));
}
void normal_(const Tensor& t, double mean, double std, Generator* gen) {
  MG_CHECK(std >= 0, "init::normal_: std must be >= 0, got ", std);
  assign(t, add(mul(randn(t.sizes(), kFloat64, gen), std), mean));
}
void constant_(const Tensor& t, double v) {
  NoGradGuard ng;
  t.detach().fill_(v);
}
void zeros_(const Tensor& t) { constant_(t, 0.0); }
void ones_(const Tensor& t) { constant_(t, 1.0); }

void kaiming_uniform_(const Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  const double bound = calculate_gain(nl, a) * std::sqrt(3.0 / double(fan(t, mode)));
  uniform_(t, -bound, bound, gen);
}
void kaiming_normal_(const Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  normal_(t, 0.0, calculate_gain(nl, a) / std::sqrt(double(fan(t, mode))), gen);
}
void xavier_uniform_(const Tensor& t, double gain, Generator* gen) {
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  const double bound = gain * std::sqrt(6.0 / double(in + out));
  uniform_(t, -bound, bound, gen);
}
void xavier_normal_(const Tensor& t, double gain, Generator* gen) {
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  normal_(t, 0.0, gain * std::sqrt(2.0 / double(in + out)), gen);
}

}  // namespace minigrad::nn::init
