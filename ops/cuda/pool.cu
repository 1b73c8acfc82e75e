// CUDA pooling kernels: one thread per output window; the backward passes add into the input
// gradient with atomics (windows may overlap).
#include <limits>

#include "../pool_window.h"
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {

// indices: int64 places h*W + w (-1: no winner) or uint8 taps ki*kw + kj (255: no winner).
template <class T, class I>
__global__ void max_pool_kernel(int64_t n, Conv2dGeometry g, T* out, I* idx, const T* x) {
  const int64_t L = g.Ho * g.Wo;
  MG_GRID_LOOP(i, n) {
    const int64_t pl = i / L, oh = (i % L) / g.Wo, ow = i % g.Wo;
    int64_t bi, bt;
    out[i] = pool::max_window(x + pl * g.H * g.W, g, oh, ow, &bi, &bt);
    if constexpr (std::is_same_v<I, uint8_t>) idx[i] = bi < 0 ? uint8_t(255) : uint8_t(bt);
    else idx[i] = bi;
  }
}

template <class T, class I>
__global__ void max_pool_backward_kernel(int64_t n, Conv2dGeometry g, T* gx, const T* gy, const I* idx) {
  const int64_t L = g.Ho * g.Wo;
  MG_GRID_LOOP(i, n) {
    const int64_t pl = i / L, oh = (i % L) / g.Wo, ow = i % g.Wo;
    int64_t place = -1;
    if constexpr (std::is_same_v<I, uint8_t>) {
      const int64_t t = idx[i];
      if (t != 255) {
        const int64_t ki = t / g.kw, kj = t % g.kw;
        place = (oh * g.sh - g.pad_h + ki * g.dh) * g.W + ow * g.sw - g.pad_w + kj * g.dw;
      }
    } else {
      place = idx[i];
    }
    if (place >= 0) atomic_add(gx + pl * g.H * g.W + place, gy[i]);
  }
}

template <class T>
__global__ void avg_pool_kernel(int64_t n, Pool2dGeometry p, T* out, const T* x) {
  const Conv2dGeometry& g = p.g;
  const int64_t L = g.Ho * g.Wo;
  MG_GRID_LOOP(i, n) {
    const int64_t pl = i / L, oh = (i % L) / g.Wo, ow = i % g.Wo;
    const T* src = x + pl * g.H * g.W;
    const pool::Window w = pool::window(p, oh, ow);
    double s = 0;
    for (int64_t ih = w.h0; ih < w.h1; ++ih)
      for (int64_t iw = w.w0; iw < w.w1; ++iw) s += src[ih * g.W + iw];
    out[i] = w.count > 0 ? T(s / double(w.count)) : T(0);
  }
}

template <class T>
__global__ void avg_pool_backward_kernel(int64_t n, Pool2dGeometry p, T* gx, const T* gy) {
  const Conv2dGeometry& g = p.g;
  const int64_t L = g.Ho * g.Wo;
  MG_GRID_LOOP(i, n) {
    const int64_t pl = i / L, oh = (i % L) / g.Wo, ow = i % g.Wo;
    const pool::Window w = pool::window(p, oh, ow);
    if (w.count <= 0) continue;
    const T v = gy[i] / T(w.count);
    T* dst = gx + pl * g.H * g.W;
    for (int64_t ih = w.h0; ih < w.h1; ++ih)
      for (int64_t iw = w.w0; iw < w.w1; ++iw) atomic_add(dst + ih * g.W + iw, v);
  }
}


}  // namespace

void CudaBackend::max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x, const Pool2dGeometry& p) {
  visit_floating(x.dtype(), "max_pool2d", [&](auto tag) {
    visit_pool_indices(indices, [&](auto itag) {
      using T = typename decltype(tag)::type;
      using I = typename decltype(itag)::type;
      launch("max_pool2d", x.device(), out.numel(), max_pool_kernel<T, I>, p.g, ptr<T>(out), ptr<I>(indices),
             ptr<T>(x));
    });
  });
}

void CudaBackend::max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices,
                                      const Pool2dGeometry& p) {
  MG_CHECK(indices.dtype() != kUInt8 || p.g.kh * p.g.kw < 255, "max_pool2d_backward: uint8 taps need a window ",
           "of fewer than 255 places, got ", p.g.kh, "x", p.g.kw);
  fill(gx, 0.0);
  visit_floating(gx.dtype(), "max_pool2d_backward", [&](auto tag) {
    visit_pool_indices(indices, [&](auto itag) {
      using T = typename decltype(tag)::type;
      using I = typename decltype(itag)::type;
      launch("max_pool2d_backward", gx.device(), gy.numel(), max_pool_backward_kernel<T, I>, p.g, ptr<T>(gx),
             ptr<T>(gy), ptr<I>(indices));
    });
  });
}

void CudaBackend::avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dGeometry& p) {
  visit_floating(x.dtype(), "avg_pool2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("avg_pool2d", x.device(), out.numel(), avg_pool_kernel<T>, p, ptr<T>(out), ptr<T>(x));
  });
}

void CudaBackend::avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dGeometry& p) {
  fill(gx, 0.0);
  visit_floating(gx.dtype(), "avg_pool2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("avg_pool2d_backward", gx.device(), gy.numel(), avg_pool_backward_kernel<T>, p, ptr<T>(gx),
           ptr<T>(gy));
  });
}

}  // namespace minigrad::cuda
