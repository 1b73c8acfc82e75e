// CPU kernels: the optimizers' fused updates, one pass over each parameter and its state.
#include <cmath>

#include "cpu_backend.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {
// The same arithmetic, in the same order, as the element functions of the CUDA kernels.
template <class T>
inline void sgd_one(T& p, T g, T* buf, const SgdStep& s) {
  T d = s.weight_decay != 0 ? g + T(s.weight_decay) * p : g;
  if (buf) {
    *buf = s.first ? d : *buf * T(s.momentum) + T(1 - s.dampening) * d;
    d = s.nesterov ? d + T(s.momentum) * *buf : *buf;
  }
  p = p + T(-s.lr) * d;
}
template <class T>
inline void adam_one(T& p, T g, T& m, T& v, const AdamStep& s) {
  if (s.weight_decay != 0) {
    if (s.decoupled) p = p * T(1 - s.lr * s.weight_decay);
    else g = g + T(s.weight_decay) * p;
  }
  m = m * T(s.beta1) + T(1 - s.beta1) * g;
  v = v * T(s.beta2) + T(1 - s.beta2) * (g * g);
  const T denom = std::sqrt(v) / T(std::sqrt(s.bias_correction2)) + T(s.eps);
  p = p + T(-s.lr / s.bias_correction1) * (m / denom);
}
}  // namespace

void CpuBackend::sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SgdStep& s) {
  visit_floating(p.dtype(), "SGD.step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pp = p.data_ptr<T>();
    const T* gp = g.data_ptr<T>();
    T* bp = buf.defined() ? buf.data_ptr<T>() : nullptr;
    const int64_t n = p.numel();
    parallel_for(0, n, kParallelGrain / 2, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sgd_one(pp[i], gp[i], bp ? bp + i : nullptr, s);
    });
  });
}

void CpuBackend::adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamStep& s) {
  visit_floating(p.dtype(), "Adam.step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pp = p.data_ptr<T>();
    const T* gp = g.data_ptr<T>();
    T* mp = m.data_ptr<T>();
    T* vp = v.data_ptr<T>();
    const int64_t n = p.numel();
    parallel_for(0, n, kParallelGrain / 2, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) adam_one(pp[i], gp[i], mp[i], vp[i], s);
    });
  });
}

}  // namespace minigrad::cpu
