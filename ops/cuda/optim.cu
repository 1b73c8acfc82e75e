// CUDA kernels: the optimizers' fused updates, one thread per element (the arithmetic of
// ops/cpu/optim.cpp, in the same order).
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {

template <class T>
__global__ void sgd_kernel(int64_t n, T* p, const T* g, T* buf, SgdStep s) {
  MG_GRID_LOOP(i, n) {
    T d = s.weight_decay != 0 ? g[i] + T(s.weight_decay) * p[i] : g[i];
    if (buf) {
      buf[i] = s.first ? d : buf[i] * T(s.momentum) + T(1 - s.dampening) * d;
      d = s.nesterov ? d + T(s.momentum) * buf[i] : buf[i];
    }
    p[i] = p[i] + T(-s.lr) * d;
  }
}

template <class T>
__global__ void adam_kernel(int64_t n, T* p, const T* g, T* m, T* v, AdamStep s) {
  MG_GRID_LOOP(i, n) {
    T gi = g[i], pi = p[i];
    if (s.weight_decay != 0) {
      if (s.decoupled) pi = pi * T(1 - s.lr * s.weight_decay);
      else gi = gi + T(s.weight_decay) * pi;
    }
    const T mi = m[i] * T(s.beta1) + T(1 - s.beta1) * gi;
    const T vi = v[i] * T(s.beta2) + T(1 - s.beta2) * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const T denom = ::sqrt(vi) / T(::sqrt(s.bias_correction2)) + T(s.eps);
    p[i] = pi + T(-s.lr / s.bias_correction1) * (mi / denom);
  }
}

}  // namespace

void CudaBackend::sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SgdStep& s) {
  visit_floating(p.dtype(), "SGD.step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("SGD.step", p.device(), p.numel(), sgd_kernel<T>, ptr<T>(p), ptr<T>(g),
           buf.defined() ? ptr<T>(buf) : nullptr, s);
  });
}

void CudaBackend::adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamStep& s) {
  visit_floating(p.dtype(), "Adam.step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("Adam.step", p.device(), p.numel(), adam_kernel<T>, ptr<T>(p), ptr<T>(g), ptr<T>(m), ptr<T>(v), s);
  });
}

}  // namespace minigrad::cuda
