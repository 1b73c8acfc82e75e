// CPU per-channel kernels: a conv's bias and its gradient; batch norm's moments, gradient sums,
// and affine map.
// Parallel over channels; each channel's (N, S) block is reduced in double.
#include "cpu_backend.h"
#include "loops.h"

namespace minigrad::cpu {

void CpuBackend::channel_bias(const Tensor& out, const Tensor& bias) {
  visit_floating(out.dtype(), "conv bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = out.size(0), C = out.size(1), S = out.size(2);
    T* op = out.data_ptr<T>();
    const T* bp = bias.data_ptr<T>();
    parallel_for(0, N * C, grain_for(S), [&](int64_t nc0_, int64_t nc1_) {
      for (int64_t nc = nc0_; nc < nc1_; ++nc) {
        T* row = op + nc * S;
        const T b = bp[nc % C];
        for (int64_t i = 0; i < S; ++i) row[i] += b;
      }
    });
  });
}

void CpuBackend::channel_sums(const Tensor& out, const Tensor& x) {
  visit_floating(x.dtype(), "conv bias gradient", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        // each row in T with 8 running sums (vectorizable), the rows added up in double
        double s = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* row = xp + (n * C + c) * S;
          T part[8] = {};
          int64_t i = 0;
          for (; i + 8 <= S; i += 8)
            for (int j = 0; j < 8; ++j) part[j] += row[i + j];
          double r = 0;
          for (int j = 0; j < 8; ++j) r += double(part[j]);
          for (; i < S; ++i) r += double(row[i]);
          s += r;
        }
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
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* p = xp + (n * C + c) * S;
          for (int64_t i = 0; i < S; ++i) s += p[i];
        }
        const double m = s / double(N * S);
        double q = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* p = xp + (n * C + c) * S;
          for (int64_t i = 0; i < S; ++i) q += (p[i] - m) * (p[i] - m);
        }
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
    parallel_for(0, C, grain_for(N * S), [&](int64_t c0_, int64_t c1_) {
      for (int64_t c = c0_; c < c1_; ++c) {
        double s = 0, sx = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* g = gp + (n * C + c) * S;
          const T* v = xp + (n * C + c) * S;
          for (int64_t i = 0; i < S; ++i) {
            s += g[i];
            sx += g[i] * v[i];
          }
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
    parallel_for(0, N * C, grain_for(S), [&](int64_t nc0_, int64_t nc1_) {
      for (int64_t nc = nc0_; nc < nc1_; ++nc) {
        const int64_t c = nc % C;
        const T av = ap[c], dv = dp[c];
        const T* p = xp + nc * S;
        T* o = op + nc * S;
        if (x2p) {
          const T bv = bp[c];
          const T* q = x2p + nc * S;
          for (int64_t i = 0; i < S; ++i) o[i] = av * p[i] + bv * q[i] + dv;
        } else {
          for (int64_t i = 0; i < S; ++i) o[i] = av * p[i] + dv;
        }
      }
    });
  });
}

}  // namespace minigrad::cpu
