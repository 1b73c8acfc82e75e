// CPU kernels: the optimizers' fused updates, one pass over each parameter and its state; the
// arithmetic runs at the CPU's vector level (ops/cpu/isa/pointwise.inc), split here over threads.
#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

void CpuBackend::sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SgdStep& s) {
  visit_floating(p.dtype(), "SGD.step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pp = p.data_ptr<T>();
    const T* gp = g.data_ptr<T>();
    T* bp = buf.defined() ? buf.data_ptr<T>() : nullptr;
    const int64_t n = p.numel();
    const auto& k = typed_kernels<T>();
    parallel_for(0, n, kParallelGrain / 2, [&](int64_t b, int64_t e) {
      k.sgd(pp + b, gp + b, bp ? bp + b : nullptr, e - b, s);
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
    const auto& k = typed_kernels<T>();
    parallel_for(0, n, kParallelGrain / 2, [&](int64_t b, int64_t e) {
      k.adam(pp + b, gp + b, mp + b, vp + b, e - b, s);
    });
  });
}

}  // namespace minigrad::cpu
