// CPU im2col / col2im. im2col is parallel over (image, column row); col2im over (image, channel),
// since a channel's rows only ever write that channel's plane.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu_backend.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {

// Output positions [lo, hi) of one row whose input column ow*s - p + k*d lies inside [0, W).
inline void valid_range(int64_t Wo, int64_t W, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  // need 0 <= ow*s + off < W
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = W - off <= 0 ? 0 : (W - off + s - 1) / s;
  lo = std::min(lo, Wo);
  hi = std::clamp(hi, lo, Wo);
}

template <class T>
void im2col_impl(T* cols, int64_t ld, const T* x, int64_t T_, const Conv2dGeometry& g) {
  const int64_t rows = g.rows(), L = g.positions(), kk = g.kh * g.kw;
  const int64_t tasks = T_ * rows;
#pragma omp parallel for schedule(static) if (tasks * L >= kParallelGrain)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t t = task / rows, r = task % rows;
    const int64_t c = r / kk, ki = (r / g.kw) % g.kh, kj = r % g.kw;
    const T* src = x + (t * g.C + c) * g.H * g.W;
    T* dst = cols + r * ld + t * L;
    const int64_t off_w = kj * g.dw - g.pad_w;
    int64_t lo, hi;
    valid_range(g.Wo, g.W, g.sw, off_w, lo, hi);
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      T* d = dst + oh * g.Wo;
      const int64_t ih = oh * g.sh - g.pad_h + ki * g.dh;
      if (ih < 0 || ih >= g.H) {
        std::fill(d, d + g.Wo, T(0));
        continue;
      }
      const T* row = src + ih * g.W;  // input column of ow is ow*sw + off_w
      std::fill(d, d + lo, T(0));
      if (g.sw == 1) std::memcpy(d + lo, row + off_w + lo, size_t(hi - lo) * sizeof(T));
      else
        for (int64_t ow = lo; ow < hi; ++ow) d[ow] = row[ow * g.sw + off_w];
      std::fill(d + hi, d + g.Wo, T(0));
    }
  }
}

template <class T>
void col2im_impl(T* x, const T* cols, int64_t ld, int64_t T_, const Conv2dGeometry& g) {
  const int64_t L = g.positions(), kk = g.kh * g.kw, planes = T_ * g.C;
#pragma omp parallel for schedule(static) if (planes * kk * L >= kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int64_t t = pl / g.C, c = pl % g.C;
    T* dst = x + pl * g.H * g.W;
    std::fill(dst, dst + g.H * g.W, T(0));
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const T* src = cols + ((c * g.kh + ki) * g.kw + kj) * ld + t * L;
        const int64_t off_w = kj * g.dw - g.pad_w;
        int64_t lo, hi;
        valid_range(g.Wo, g.W, g.sw, off_w, lo, hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const int64_t ih = oh * g.sh - g.pad_h + ki * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          T* row = dst + ih * g.W;
          const T* s = src + oh * g.Wo;
          if (g.sw == 1)
            for (int64_t ow = lo; ow < hi; ++ow) row[ow + off_w] += s[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) row[ow * g.sw + off_w] += s[ow];
        }
      }
  }
}

}  // namespace

void CpuBackend::im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) {
  visit_floating(x.dtype(), "im2col", [&](auto tag) {
    using T = typename decltype(tag)::type;
    im2col_impl<T>(cols.data_ptr<T>(), cols.stride(0), x.data_ptr<T>(), x.size(0), g);
  });
}

void CpuBackend::col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) {
  visit_floating(x.dtype(), "col2im", [&](auto tag) {
    using T = typename decltype(tag)::type;
    col2im_impl<T>(x.data_ptr<T>(), cols.data_ptr<T>(), cols.stride(0), x.size(0), g);
  });
}

}  // namespace minigrad::cpu
