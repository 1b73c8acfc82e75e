// minigrad: optimizers, learning-rate schedulers and gradient clipping, as torch::optim.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace minigrad::optim {

using StateDict = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> params, double lr, const char* name);
  virtual ~Optimizer() = default;
  // One update from the parameters' current .grad() (parameters without one are skipped).
  virtual void step() = 0;
  void zero_grad();
  double lr() const { return lr_; }
  void set_lr(double lr);
  const std::vector<Tensor>& params() const { return params_; }
  // The optimizer's state as named tensors (for checkpoints), and back. Loading checks everything
  // before it changes anything: each name is one this optimizer has (at most once, none missing),
  // shapes match its parameters, the learning rate and the state are finite (second moments >= 0,
  // Adam's step an integer in [0, 2^53]); a bad entry is an error naming its key.
  virtual StateDict state_dict() const = 0;
  virtual void load_state_dict(const StateDict& state) = 0;

 protected:
  std::vector<Tensor> params_;
  double lr_;
  const char* name_;
};

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions opts);
  void step() override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  SGDOptions options;

 private:
  std::vector<Tensor> momentum_;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: added to the gradient; AdamW: decoupled decay
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions opts);
  void step() override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  AdamOptions options;

 protected:
  Adam(std::vector<Tensor> params, AdamOptions opts, bool decoupled, const char* name);
  bool decoupled_;
  int64_t step_ = 0;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

// Adam with decoupled weight decay (Loshchilov & Hutter); weight_decay defaults to 0.01. An
// aggregate like the others, so `AdamW opt(params, {.lr = 3e-3})` reads as in the other optimizers.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opts);
};

// A schedule of the learning rate as a function of the epoch, from the optimizer's learning rate
// when the scheduler is made (the base). Every scheduler here has PyTorch's closed form, so resuming
// at an epoch (set_last_epoch) gives the rate an uninterrupted run has there.
class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& opt) : opt_(opt), base_lr_(opt.lr()), last_lr_(opt.lr()) {}
  virtual ~LRScheduler() = default;
  // Call once per epoch, after the epoch's optimizer steps.
  void step();
  int64_t last_epoch() const { return epoch_; }
  void set_last_epoch(int64_t e);  // for resuming
  // The rate the scheduler last set, one per parameter group as PyTorch's (minigrad's optimizers
  // have one group).
  std::vector<double> get_last_lr() const { return {last_lr_}; }

 protected:
  virtual double lr_at(int64_t epoch) const = 0;
  void apply(int64_t epoch);  // sets the optimizer's rate to lr_at(epoch)
  Optimizer& opt_;
  double base_lr_, last_lr_;
  int64_t epoch_ = 0;
};

// lr = base * gamma^(epoch / step_size)
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);

 protected:
  double lr_at(int64_t epoch) const override;
  int64_t step_size_;
  double gamma_;
};

// lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / T_max)) / 2
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& opt, int64_t T_max, double eta_min = 0.0);

 protected:
  double lr_at(int64_t epoch) const override;
  int64_t t_max_;
  double eta_min_;
};

// lr = base * lr_lambda(epoch); applied at construction (epoch 0), as PyTorch's LambdaLR.
class LambdaLR : public LRScheduler {
 public:
  LambdaLR(Optimizer& opt, std::function<double(int64_t epoch)> lr_lambda);

 protected:
  double lr_at(int64_t epoch) const override;
  std::function<double(int64_t)> lambda_;
};

// lr = base * gamma^(the number of milestones <= epoch); a milestone given twice counts twice.
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& opt, std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  double lr_at(int64_t epoch) const override;
  std::vector<int64_t> milestones_;  // sorted
  double gamma_;
};

// lr = base * gamma^epoch
class ExponentialLR : public LRScheduler {
 public:
  ExponentialLR(Optimizer& opt, double gamma);

 protected:
  double lr_at(int64_t epoch) const override;
  double gamma_;
};

struct LinearLROptions {
  double start_factor = 1.0 / 3;  // in (0, 1]
  double end_factor = 1.0;        // in [0, 1]
  int64_t total_iters = 5;        // > 0
};
// A linear warm-up (or decay): lr = base * (start + (end - start) * min(epoch, total_iters) /
// total_iters); applied at construction, as PyTorch's LinearLR.
class LinearLR : public LRScheduler {
 public:
  explicit LinearLR(Optimizer& opt, LinearLROptions opts = {});

 protected:
  double lr_at(int64_t epoch) const override;
  LinearLROptions o_;
};

// Clamps every gradient element to [-clip_value, clip_value] in place, as
// torch::nn::utils::clip_grad_value_ (NaN stays NaN).
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

// Scales the gradients so that their joint norm (of order norm_type: 2, 1, any p > 0, or infinity
// for the largest magnitude) is at most max_norm; returns the norm before, as
// torch::nn::utils::clip_grad_norm_. A non-finite norm (a NaN or inf gradient) is an error with
// error_if_nonfinite; otherwise the gradients are scaled by max_norm / (NaN or inf) as PyTorch does.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

}  // namespace minigrad::optim
