// CUDA per-channel kernels: a conv's bias and its gradient; batch norm's moments, gradient sums
// and affine map. The sums take one block per channel, reducing in double through shared memory.
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {

// The block's sum of v (kThreads threads), returned to every thread.
__device__ double block_sum(double v) {
  __shared__ double part[kThreads];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const double r = part[0];
  __syncthreads();
  return r;
}

// Block c: sums over (N, S) of channel c of x, of x*y (when y), and of (x - mean)^2 (when mean).
template <class T>
__global__ void channel_sums_kernel(int64_t N, int64_t C, int64_t S, const T* x, const T* y, T* sum, T* sum_xy,
                                    T* mean, T* var) {
  const int64_t c = blockIdx.x;
  double s = 0, sxy = 0;
  for (int64_t i = threadIdx.x; i < N * S; i += kThreads) {
    const int64_t at = (i / S * C + c) * S + i % S;
    s += x[at];
    if (y) sxy += double(x[at]) * double(y[at]);
  }
  s = block_sum(s);
  if (y) sxy = block_sum(sxy);
  if (mean) {
    const double m = s / double(N * S);
    double q = 0;
    for (int64_t i = threadIdx.x; i < N * S; i += kThreads) {
      const double d = double(x[(i / S * C + c) * S + i % S]) - m;
      q += d * d;
    }
    q = block_sum(q);
    if (threadIdx.x == 0) {
      mean[c] = T(m);
      var[c] = T(q / double(N * S));
    }
    return;
  }
  if (threadIdx.x == 0) {
    sum[c] = T(s);
    if (sum_xy) sum_xy[c] = T(sxy);
  }
}

template <class T>
__global__ void channel_bias_kernel(int64_t n, int64_t C, int64_t S, T* out, const T* bias) {
  MG_GRID_LOOP(i, n) out[i] += bias[(i / S) % C];
}

template <class T>
__global__ void channel_affine_kernel(int64_t n, int64_t C, int64_t S, T* out, const T* x, const T* a, const T* d,
                                      const T* x2, const T* b) {
  MG_GRID_LOOP(i, n) {
    const int64_t c = (i / S) % C;
    T v = a[c] * x[i] + d[c];
    if (x2) v += b[c] * x2[i];
    out[i] = v;
  }
}

template <class T>
void launch_channel_sums(const char* name, const Tensor& x, const Tensor& y, T* sum, T* sum_xy, T* mean, T* var) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
  if (C == 0) return;
  set_device(x.device());
  channel_sums_kernel<T><<<unsigned(C), kThreads, 0, stream(x.device())>>>(
      N, C, S, ptr<T>(x), y.defined() ? ptr<T>(y) : nullptr, sum, sum_xy, mean, var);
  MG_CUDA_LAUNCH_CHECK(name);
}

}  // namespace

void CudaBackend::channel_bias(const Tensor& out, const Tensor& bias) {
  visit_floating(out.dtype(), "conv bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("conv bias", out.device(), out.numel(), channel_bias_kernel<T>, out.size(1), out.size(2), ptr<T>(out),
           ptr<T>(bias));
  });
}

void CudaBackend::channel_sums(const Tensor& out, const Tensor& x) {
  visit_floating(x.dtype(), "conv bias gradient", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_channel_sums<T>("conv bias gradient", x, Tensor(), ptr<T>(out), nullptr, nullptr, nullptr);
  });
}

void CudaBackend::channel_moments(const Tensor& mean, const Tensor& var, const Tensor& x) {
  visit_floating(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_channel_sums<T>("batch_norm", x, Tensor(), nullptr, nullptr, ptr<T>(mean), ptr<T>(var));
  });
}

void CudaBackend::channel_grad_sums(const Tensor& sum_gy, const Tensor& sum_gyx, const Tensor& gy, const Tensor& x) {
  visit_floating(x.dtype(), "batch_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_channel_sums<T>("batch_norm_backward", gy, x, ptr<T>(sum_gy), ptr<T>(sum_gyx), nullptr, nullptr);
  });
}

void CudaBackend::channel_affine(const Tensor& out, const Tensor& x, const Tensor& a, const Tensor& d,
                                 const Tensor& x2, const Tensor& b) {
  visit_floating(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("batch_norm", x.device(), x.numel(), channel_affine_kernel<T>, x.size(1), x.size(2), ptr<T>(out),
           ptr<T>(x), ptr<T>(a), ptr<T>(d), x2.defined() ? ptr<T>(x2) : nullptr, b.defined() ? ptr<T>(b) : nullptr);
  });
}

}  // namespace minigrad::cuda
