// CUDA im2col and col2im. col2im is a gather: each thread owns one input element and sums the
// column entries it came from, so no atomics are needed. Convs on the GPU run as unfold + GEMM
// (the Backend default of choose_conv; the direct kernels are the CPU's).
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {

// One thread per column entry: row r = (c, ki, kj), image t, position p.
template <class T>
__global__ void im2col_kernel(int64_t n, Conv2dGeometry g, int64_t T_, int64_t ld, T* cols, const T* x) {
  const int64_t L = g.Ho * g.Wo, kk = g.kh * g.kw;
  MG_GRID_LOOP(i, n) {
    const int64_t p = i % L, t = (i / L) % T_, r = i / (L * T_);
    const int64_t c = r / kk, ki = (r % kk) / g.kw, kj = r % g.kw;
    const int64_t oh = p / g.Wo, ow = p % g.Wo;
    const int64_t ih = oh * g.sh - g.pad_h + ki * g.dh, iw = ow * g.sw - g.pad_w + kj * g.dw;
    const bool in = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
    cols[r * ld + t * L + p] = in ? x[((t * g.C + c) * g.H + ih) * g.W + iw] : T(0);
  }
}

// One thread per input element (t, c, h, w): the sum over the taps whose window covers it.
template <class T>
__global__ void col2im_kernel(int64_t n, Conv2dGeometry g, int64_t ld, T* x, const T* cols) {
  const int64_t L = g.Ho * g.Wo, kk = g.kh * g.kw;
  MG_GRID_LOOP(i, n) {
    const int64_t w = i % g.W, h = (i / g.W) % g.H, c = (i / (g.W * g.H)) % g.C, t = i / (g.W * g.H * g.C);
    T s = T(0);
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const int64_t hh = h + g.pad_h - ki * g.dh;
      if (hh < 0 || hh % g.sh != 0) continue;
      const int64_t oh = hh / g.sh;
      if (oh >= g.Ho) continue;
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const int64_t ww = w + g.pad_w - kj * g.dw;
        if (ww < 0 || ww % g.sw != 0) continue;
        const int64_t ow = ww / g.sw;
        if (ow >= g.Wo) continue;
        s += cols[(c * kk + ki * g.kw + kj) * ld + t * L + oh * g.Wo + ow];
      }
    }
    x[i] = s;
  }
}

}  // namespace

void CudaBackend::im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) {
  visit_floating(x.dtype(), "im2col", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t T_ = x.size(0);
    launch("im2col", x.device(), g.rows() * T_ * g.positions(), im2col_kernel<T>, g, T_, cols.stride(0),
           ptr<T>(cols), ptr<T>(x));
  });
}

void CudaBackend::col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) {
  visit_floating(x.dtype(), "col2im", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("col2im", x.device(), x.numel(), col2im_kernel<T>, g, cols.stride(0), ptr<T>(x), ptr<T>(cols));
  });
}

}  // namespace minigrad::cuda
