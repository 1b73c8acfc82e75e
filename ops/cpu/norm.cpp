// CPU per-channel kernels: a conv's bias and its gradient; batch norm's moments, gradient sums,
// and affine map.
// Parallel over channels (sums) or rows of one channel (maps); the rows run through the CPU
// level's vector kernels (ops/cpu/isa/pointwise.inc), each row's vector sums added in double.
#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

void CpuBackend::channel_bias(const Tensor& out, const Tensor& bias) {
  visit_floating(out.dtype(), "conv bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = out.size(0), C = out.size(1), S = out.size(2);
    T* op = out.data_ptr<T>();
    const T* bp = bias.data_ptr<T>();
    const auto& k = typed_kernels<T>();
    parallel_for(0, N * C, grain_for(S), [&](int64_t nc0_, int64_t nc1_) {
      for (int64_t nc = nc0_; nc < nc1_; ++nc) k.affine(op + nc * S, op + nc * S, T(1), bp[nc % C], S);
    });
  });
}

void CpuBackend::channel_sums(const Tensor& out, const Tensor& x) {
  visit_floating(x.dtype(), "conv bias gradient", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    const auto& k = typed_kernels<T>();
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += k.sum(xp + (n * C + c) * S, S);
        op[c] = T(s);
      }
    });
  });
}

void CpuBackend::channel_moments(const Tensor& mean, const Tensor& var, const Tensor& x) {
  visit_floating(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
    const T* xp = x.data_ptr<T>();
    T* mp = mean.data_ptr<T>();
    T* vp = var.data_ptr<T>();
    const auto& k = typed_kernels<T>();
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        // two passes (the mean, then squares about it): no cancellation of E[x^2] - E[x]^2
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += k.sum(xp + (n * C + c) * S, S);
        const double m = s / double(N * S);
        double q = 0;
        for (int64_t n = 0; n < N; ++n) q += k.sum_sq_dev(xp + (n * C + c) * S, S, m);
        mp[c] = T(m);
        vp[c] = T(q / double(N * S));
      }
    });
  });
}

void CpuBackend::channel_grad_sums(const Tensor& sum_gy, const Tensor& sum_gyx, const Tensor& gy,
                                   const Tensor& x) {
  visit_floating(x.dtype(), "batch_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
    const T* gp = gy.data_ptr<T>();
    const T* xp = x.data_ptr<T>();
    T* a = sum_gy.data_ptr<T>();
    T* b = sum_gyx.data_ptr<T>();
    const auto& k = typed_kernels<T>();
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        double s = 0, sx = 0;
        for (int64_t n = 0; n < N; ++n) {
          double rs, rsx;
          k.sum_and_dot(gp + (n * C + c) * S, xp + (n * C + c) * S, S, &rs, &rsx);
          s += rs;
          sx += rsx;
        }
        a[c] = T(s);
        b[c] = T(sx);
      }
    });
  });
}

void CpuBackend::channel_affine(const Tensor& out, const Tensor& x, const Tensor& a, const Tensor& d,
                                const Tensor& x2, const Tensor& b) {
  visit_floating(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
    const T* xp = x.data_ptr<T>();
    const T* x2p = x2.defined() ? x2.data_ptr<T>() : nullptr;
    const T* ap = a.data_ptr<T>();
    const T* dp = d.data_ptr<T>();
    const T* bp = b.defined() ? b.data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    const auto& k = typed_kernels<T>();
    parallel_for(0, N * C, grain_for(S), [&](int64_t nc0_, int64_t nc1_) {
      for (int64_t nc = nc0_; nc < nc1_; ++nc) {
        const int64_t c = nc % C;
        if (x2p) k.affine2(op + nc * S, xp + nc * S, ap[c], x2p + nc * S, bp[c], dp[c], S);
        else k.affine(op + nc * S, xp + nc * S, ap[c], dp[c], S);
      }
    });
  });
}

}  // namespace minigrad::cpu
