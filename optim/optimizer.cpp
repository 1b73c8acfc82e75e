#include "optimizer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <numbers>

#include "../core/autograd.h"
#include "../ops/backend.h"
#include "../ops/ops.h"

namespace minigrad::optim {

Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* name)
    : params_(std::move(params)), lr_(lr), name_(name) {
  MG_CHECK(std::isfinite(lr) && lr >= 0, name_, ": learning rate must be finite and >= 0, got ", lr);
  for (size_t i = 0; i < params_.size(); ++i)
    MG_CHECK(params_[i].defined() && params_[i].requires_grad() && params_[i].is_leaf(), name_,
             ": parameter ", i, " must be a leaf tensor that requires grad");
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  MG_CHECK(std::isfinite(lr) && lr >= 0, name_, ": learning rate must be finite and >= 0, got ", lr);
  lr_ = lr;
}

namespace {
Tensor find(const StateDict& s, const std::string& key, const char* op) {
  for (const auto& [k, v] : s)
    if (k == key) return v;
  MG_FAIL(op, ".load_state_dict: missing entry \"", key, "\"");
}
bool has(const StateDict& s, const std::string& key) {
  for (const auto& kv : s)
    if (kv.first == key) return true;
  return false;
}
// Every key of s is one of `known` (or, with a prefix in `indexed`, prefix + a parameter index),
// at most once.
void check_keys(const StateDict& s, const std::vector<std::string>& known, const std::vector<std::string>& indexed,
                size_t nparams, const char* op) {
  std::set<std::string> seen;
  for (const auto& [k, v] : s) {
    MG_CHECK(seen.insert(k).second, op, ".load_state_dict: entry \"", k, "\" appears twice");
    bool ok = std::find(known.begin(), known.end(), k) != known.end();
    for (const auto& pre : indexed)
      if (!ok && k.rfind(pre, 0) == 0) {
        size_t i = 0;
        const char* b = k.data() + pre.size();
        const auto [p, err] = std::from_chars(b, k.data() + k.size(), i);
        ok = err == std::errc() && p == k.data() + k.size() && p != b && i < nparams && std::to_string(i) == std::string(b);
      }
    MG_CHECK(ok, op, ".load_state_dict: unexpected entry \"", k, "\" (", nparams, " parameters)");
  }
}
// A scalar entry's value as a double, finite and >= 0.
double scalar_entry(const StateDict& s, const std::string& key, const char* op) {
  Tensor t = find(s, key, op);
  MG_CHECK(t.numel() == 1, op, ".load_state_dict: \"", key, "\" has shape ", t.sizes(), ", expected one value");
  const double v = t.item();
  MG_CHECK(std::isfinite(v) && v >= 0, op, ".load_state_dict: \"", key, "\" is ", v, ", expected a finite value >= 0");
  return v;
}
// The entry for dst: its shape, and every value finite (and >= 0 when nonneg).
Tensor checked_state(const StateDict& s, const Tensor& dst, const std::string& key, const char* op, bool nonneg) {
  Tensor src = find(s, key, op);
  MG_CHECK(src.sizes() == dst.sizes(), op, ".load_state_dict: \"", key, "\" has shape ", src.sizes(), ", expected ",
           dst.sizes());
  MG_CHECK(is_floating(src.dtype()), op, ".load_state_dict: \"", key, "\" is ", src.dtype(), ", expected floating values");
  Tensor c = src.detach().to(Device::cpu()).to(kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  for (int64_t i = 0; i < c.numel(); ++i)
    MG_CHECK(std::isfinite(p[i]) && (!nonneg || p[i] >= 0), op, ".load_state_dict: \"", key, "\" holds ", p[i],
             " at index ", i, nonneg ? ", expected finite values >= 0" : ", expected finite values");
  return src;
}
void load_into(const Tensor& dst, const Tensor& src) {
  NoGradGuard ng;
  dst.detach().copy_(src.to(dst.dtype()).to(dst.device()));
}
}  // namespace

// ---- SGD

SGD::SGD(std::vector<Tensor> params, SGDOptions o) : Optimizer(std::move(params), o.lr, "SGD"), options(o) {
  MG_CHECK(o.momentum >= 0 && o.weight_decay >= 0, "SGD: momentum (", o.momentum, ") and weight_decay (",
           o.weight_decay, ") must be >= 0");
  MG_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
           "SGD: nesterov needs momentum > 0 and dampening 0");
  momentum_.resize(params_.size());
}

// The fused kernels take contiguous operands of the parameter's dtype and device; a strided
// parameter is updated through a contiguous copy, written back.
void SGD::step() {
  NoGradGuard ng;
  options.lr = lr_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].detach(), g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor pc = p.contiguous(), gc = g.to(p.dtype()).contiguous();
    Tensor& buf = momentum_[i];
    const bool first = options.momentum != 0 && !buf.defined();
    if (first) buf = empty(p.sizes(), p.options());
    backend_for(p.device()).sgd_step(pc, gc, options.momentum != 0 ? buf : Tensor(),
                                     {.lr = lr_, .momentum = options.momentum, .dampening = options.dampening,
                                      .weight_decay = options.weight_decay, .nesterov = options.nesterov,
                                      .first = first});
    if (!pc.is_same(p)) p.copy_(pc);
    ++p.storage()->version;  // written in place: tensors saved for backward notice
  }
}

StateDict SGD::state_dict() const {
  StateDict s{{"lr", scalar_tensor(lr_, kFloat64)}};
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) s.emplace_back("momentum_buffer." + std::to_string(i), momentum_[i]);
  return s;
}

void SGD::load_state_dict(const StateDict& s) {
  check_keys(s, {"lr"}, {"momentum_buffer."}, params_.size(), "SGD");
  const double lr = scalar_entry(s, "lr", "SGD");
  std::vector<Tensor> src(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string key = "momentum_buffer." + std::to_string(i);
    if (has(s, key)) src[i] = checked_state(s, params_[i].detach(), key, "SGD", false);
  }
  // Everything checked: now the state changes.
  set_lr(lr);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!src[i].defined()) {
      momentum_[i] = Tensor();
      continue;
    }
    if (!momentum_[i].defined()) momentum_[i] = zeros_like(params_[i].detach());
    load_into(momentum_[i], src[i]);
  }
}

// ---- Adam / AdamW

Adam::Adam(std::vector<Tensor> params, AdamOptions o) : Adam(std::move(params), o, false, "Adam") {}

Adam::Adam(std::vector<Tensor> params, AdamOptions o, bool decoupled, const char* name)
    : Optimizer(std::move(params), o.lr, name), options(o), decoupled_(decoupled) {
  MG_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, name, ": betas must be in [0, 1), got (",
           o.beta1, ", ", o.beta2, ")");
  MG_CHECK(o.eps >= 0 && o.weight_decay >= 0, name, ": eps and weight_decay must be >= 0");
  for (const auto& p : params_) {
    exp_avg_.push_back(zeros_like(p.detach()));
    exp_avg_sq_.push_back(zeros_like(p.detach()));
  }
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o)
    : Adam(std::move(params), AdamOptions{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                                          .weight_decay = o.weight_decay},
           true, "AdamW") {}

void Adam::step() {
  NoGradGuard ng;
  ++step_;
  const double bc1 = 1 - std::pow(options.beta1, double(step_)), bc2 = 1 - std::pow(options.beta2, double(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].detach(), g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor pc = p.contiguous(), gc = g.to(p.dtype()).contiguous();
    backend_for(p.device()).adam_step(pc, gc, exp_avg_[i], exp_avg_sq_[i],
                                      {.lr = lr_, .beta1 = options.beta1, .beta2 = options.beta2, .eps = options.eps,
                                       .weight_decay = options.weight_decay, .bias_correction1 = bc1,
                                       .bias_correction2 = bc2, .decoupled = decoupled_});
    if (!pc.is_same(p)) p.copy_(pc);
    ++p.storage()->version;  // written in place: tensors saved for backward notice
  }
}

StateDict Adam::state_dict() const {
  StateDict s{{"lr", scalar_tensor(lr_, kFloat64)}, {"step", scalar_tensor(double(step_), kInt64)}};
  for (size_t i = 0; i < params_.size(); ++i) {
    s.emplace_back("exp_avg." + std::to_string(i), exp_avg_[i]);
    s.emplace_back("exp_avg_sq." + std::to_string(i), exp_avg_sq_[i]);
  }
  return s;
}

void Adam::load_state_dict(const StateDict& s) {
  check_keys(s, {"lr", "step"}, {"exp_avg.", "exp_avg_sq."}, params_.size(), name_);
  const double lr = scalar_entry(s, "lr", name_);
  // The step count: an integer up to 2^53 (beyond it the bias corrections are 1 in double anyway).
  const double step = scalar_entry(s, "step", name_);
  MG_CHECK(step == std::floor(step) && step <= 9007199254740992.0, name_, ".load_state_dict: \"step\" is ", step,
           ", expected an integer in [0, 2^53]");
  std::vector<Tensor> m(params_.size()), v(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    m[i] = checked_state(s, exp_avg_[i], "exp_avg." + std::to_string(i), name_, false);
    v[i] = checked_state(s, exp_avg_sq_[i], "exp_avg_sq." + std::to_string(i), name_, true);
  }
  set_lr(lr);
  step_ = int64_t(step);
  for (size_t i = 0; i < params_.size(); ++i) {
    load_into(exp_avg_[i], m[i]);
    load_into(exp_avg_sq_[i], v[i]);
  }
}

// ---- schedulers

void LRScheduler::apply(int64_t e) {
  const double lr = lr_at(e);
  opt_.set_lr(lr);  // checks that it is finite and >= 0
  epoch_ = e;
  last_lr_ = lr;
}

void LRScheduler::step() { apply(epoch_ + 1); }

void LRScheduler::set_last_epoch(int64_t e) {
  MG_CHECK(e >= 0, "LRScheduler: epoch must be >= 0, got ", e);
  apply(e);
}

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma)
    : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
  MG_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
}
double StepLR::lr_at(int64_t e) const { return base_lr_ * std::pow(gamma_, double(e / step_size_)); }

CosineAnnealingLR::CosineAnnealingLR(Optimizer& opt, int64_t T_max, double eta_min)
    : LRScheduler(opt), t_max_(T_max), eta_min_(eta_min) {
  MG_CHECK(T_max > 0, "CosineAnnealingLR: T_max must be positive, got ", T_max);
}
double CosineAnnealingLR::lr_at(int64_t e) const {
  return eta_min_ + (base_lr_ - eta_min_) * (1 + std::cos(std::numbers::pi * double(e) / double(t_max_))) / 2;
}

LambdaLR::LambdaLR(Optimizer& opt, std::function<double(int64_t)> lr_lambda)
    : LRScheduler(opt), lambda_(std::move(lr_lambda)) {
  MG_CHECK(bool(lambda_), "LambdaLR: lr_lambda is empty");
  apply(0);
}
double LambdaLR::lr_at(int64_t e) const {
  const double f = lambda_(e);
  MG_CHECK(std::isfinite(f) && f >= 0, "LambdaLR: lr_lambda(", e, ") = ", f, "; expected a finite factor >= 0");
  return base_lr_ * f;
}

MultiStepLR::MultiStepLR(Optimizer& opt, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(opt), milestones_(std::move(milestones)), gamma_(gamma) {
  for (int64_t m : milestones_) MG_CHECK(m >= 0, "MultiStepLR: milestones must be >= 0, got ", milestones_);
  MG_CHECK(std::isfinite(gamma) && gamma >= 0, "MultiStepLR: gamma must be finite and >= 0, got ", gamma);
  std::sort(milestones_.begin(), milestones_.end());
}
double MultiStepLR::lr_at(int64_t e) const {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), e) - milestones_.begin();
  return base_lr_ * std::pow(gamma_, double(passed));
}

ExponentialLR::ExponentialLR(Optimizer& opt, double gamma) : LRScheduler(opt), gamma_(gamma) {
  MG_CHECK(std::isfinite(gamma) && gamma > 0, "ExponentialLR: gamma must be finite and positive, got ", gamma);
}
double ExponentialLR::lr_at(int64_t e) const { return base_lr_ * std::pow(gamma_, double(e)); }

LinearLR::LinearLR(Optimizer& opt, LinearLROptions opts) : LRScheduler(opt), o_(opts) {
  MG_CHECK(o_.start_factor > 0 && o_.start_factor <= 1, "LinearLR: start_factor must be in (0, 1], got ",
           o_.start_factor);
  MG_CHECK(o_.end_factor >= 0 && o_.end_factor <= 1, "LinearLR: end_factor must be in [0, 1], got ", o_.end_factor);
  MG_CHECK(o_.total_iters > 0, "LinearLR: total_iters must be positive, got ", o_.total_iters);
  apply(0);
}
double LinearLR::lr_at(int64_t e) const {
  const double t = double(std::min(e, o_.total_iters)) / double(o_.total_iters);
  return base_lr_ * (o_.start_factor + (o_.end_factor - o_.start_factor) * t);
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  MG_CHECK(clip_value >= 0, "clip_grad_value_: clip_value must be >= 0, got ", clip_value);
  NoGradGuard ng;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    const Tensor lo = scalar_tensor(-clip_value, g.options()), hi = scalar_tensor(clip_value, g.options());
    g.copy_(minimum(maximum(g, lo), hi));  // maximum and minimum keep NaN
  }
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  MG_CHECK(max_norm > 0 && std::isfinite(max_norm), "clip_grad_norm_: max_norm must be positive and finite, got ", max_norm);
  MG_CHECK(norm_type > 0, "clip_grad_norm_: norm_type must be positive (or infinity), got ", norm_type);
  NoGradGuard ng;
  const bool inf = std::isinf(norm_type);
  double total = 0;
  for (const auto& p : params)
    if (p.grad().defined() && p.grad().numel() > 0) {
      Tensor g = abs(p.grad().to(kFloat64));
      if (inf) {
        const double m = max(g).item();  // NaN when g holds one
        total = std::isnan(m) || std::isnan(total) ? std::numeric_limits<double>::quiet_NaN() : std::max(total, m);
      } else if (norm_type == 2) {
        total += sum(mul(g, g)).item();
      } else if (norm_type == 1) {
        total += sum(g).item();
      } else {
        total += sum(pow(g, norm_type)).item();
      }
    }
  if (!inf) total = norm_type == 2 ? std::sqrt(total) : norm_type == 1 ? total : std::pow(total, 1.0 / norm_type);
  MG_CHECK(!error_if_nonfinite || std::isfinite(total), "clip_grad_norm_: the total norm of order ", norm_type,
           " of the gradients of ", params.size(), " parameters is ", total,
           "; the gradients are not finite (error_if_nonfinite = true)");
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(coef);
  return total;
}

}  // namespace minigrad::optim
