// minigrad: one optimizer step's parameters, as the backends' fused update kernels take them
// (plain structs with no includes: the per-ISA CPU kernels in ops/cpu/isa/ read them too).
#pragma once

namespace minigrad {

// One optimizer step, fused: the arithmetic of optim::SGD and optim::Adam/AdamW in one pass.
struct SgdStep {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first = false;  // the momentum buffer starts as this step's d
};
struct AdamStep {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double bias_correction1 = 1, bias_correction2 = 1;
  bool decoupled = false;  // AdamW: p *= 1 - lr * weight_decay instead of g += weight_decay * p
};

}  // namespace minigrad
