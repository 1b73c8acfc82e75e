#include "optimizer.h"

#include <cmath>
#include <numbers>

#include "../core/autograd.h"
#include "../ops/backend.h"
#include "../ops/ops.h"

namespace minigrad::optim {

Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* name)
    : params_(std::move(params)), lr_(lr), name_(name) {
  MG_CHECK(lr >= 0, name_, ": learning rate must be >= 0, got ", lr);
  for (size_t i = 0; i < params_.size(); ++i)
    MG_CHECK(params_[i].defined() && params_[i].requires_grad() && params_[i].is_leaf(), name_,
             ": parameter ", i, " must be a leaf tensor that requires grad");
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  MG_CHECK(lr >= 0, name_, ": learning rate must be >= 0, got ", lr);
  lr_ = lr;
}

namespace {
Tensor find(const StateDict& s, const std::string& key, const char* op) {
  for (const auto& [k, v] : s)
    if (k == key) return v;
  MG_FAIL(op, ".load_state_dict: missing entry \"", key, "\"");
}
void load_into(const Tensor& dst, const Tensor& src, const std::string& key, const char* op) {
  MG_CHECK(src.sizes() == dst.sizes(), op, ".load_state_dict: \"", key, "\" has shape ", src.sizes(),
           ", expected ", dst.sizes());
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
  set_lr(find(s, "lr", "SGD").item());
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string key = "momentum_buffer." + std::to_string(i);
    bool present = false;
    for (const auto& [k, v] : s) present = present || k == key;
    if (!present) {
      momentum_[i] = Tensor();
      continue;
    }
    if (!momentum_[i].defined()) momentum_[i] = zeros_like(params_[i].detach());
    load_into(momentum_[i], find(s, key, "SGD"), key, "SGD");
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

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o) : Adam(std::move(params), o, true, "AdamW") {}

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
  set_lr(find(s, "lr", name_).item());
  step_ = find(s, "step", name_).item<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto* v : {&exp_avg_, &exp_avg_sq_}) {
      const std::string key = (v == &exp_avg_ ? "exp_avg." : "exp_avg_sq.") + std::to_string(i);
      load_into((*v)[i], find(s, key, name_), key, name_);
    }
  }
}

// ---- schedulers

void LRScheduler::step() {
  ++epoch_;
  opt_.set_lr(lr_at(epoch_));
}

void LRScheduler::set_last_epoch(int64_t e) {
  MG_CHECK(e >= 0, "LRScheduler: epoch must be >= 0, got ", e);
  epoch_ = e;
  opt_.set_lr(lr_at(epoch_));
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

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  MG_CHECK(max_norm > 0, "clip_grad_norm_: max_norm must be positive, got ", max_norm);
  NoGradGuard ng;
  double total = 0;
  for (const auto& p : params)
    if (p.grad().defined()) {
      Tensor g = p.grad().to(kFloat64);
      total += sum(mul(g, g)).item();
    }
  total = std::sqrt(total);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(coef);
  return total;
}

}  // namespace minigrad::optim
