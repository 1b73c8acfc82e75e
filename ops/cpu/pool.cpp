// CPU pooling kernels, parallel over planes (N*C): each plane is independent in both directions.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../pool_window.h"
#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {

// dst = take ? v : dst, without a branch.
template <class T>
inline void select_if(bool take, T& dst, T v) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U d, s;
  std::memcpy(&d, &dst, sizeof(T));
  std::memcpy(&s, &v, sizeof(T));
  d ^= (d ^ s) & (U(0) - U(take));
  std::memcpy(&dst, &d, sizeof(T));
}

// Each output's winner is stored as I: int64_t gives its place in the plane (h*W + w, PyTorch's
// indices), uint8_t its tap in the window (ki*kw + kj), an eighth of the memory for backward.
// A window that lies wholly in the padding (possible with dilation) has no winner: -1, or kNoTap.
inline constexpr uint8_t kNoTap = 255;
template <class I>
inline I winner(int64_t plane_index, int64_t tap) {
  if constexpr (std::is_same_v<I, uint8_t>) return plane_index < 0 ? kNoTap : uint8_t(tap);
  else return plane_index;
}

// Without padding every window lies inside the input (ceil_mode aside): no bounds checks.
inline bool windows_inside(const Conv2dGeometry& g) {
  return g.pad_h == 0 && g.pad_w == 0 && (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh < g.H &&
         (g.Wo - 1) * g.sw + (g.kw - 1) * g.dw < g.W;
}
// The common 2x2 stride-2 window, inside the plane: the CPU level's kernels (ops/cpu/isa/pool.inc).
inline bool plain_2x2(const Conv2dGeometry& g) {
  return windows_inside(g) && g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.dh == 1 && g.dw == 1;
}

// The 2x2 kernel storing I: uint8 taps directly, or int64 places converted from taps through a
// per-thread buffer.
template <class T, class I>
void max_pool_2x2_as(const TypedKernels<T>& k, const T* src, T* out, I* idx, int64_t W, int64_t Ho, int64_t Wo) {
  if constexpr (std::is_same_v<I, uint8_t>) {
    k.max_pool_2x2(src, out, idx, W, Ho, Wo);
  } else {
    thread_local std::vector<uint8_t> taps;
    taps.resize(size_t(Ho * Wo));
    k.max_pool_2x2(src, out, taps.data(), W, Ho, Wo);
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t j = 0; j < Wo; ++j) {
        const uint8_t t = taps[size_t(oh * Wo + j)];
        idx[oh * Wo + j] = (2 * oh + (t >> 1)) * W + 2 * j + (t & 1);
      }
  }
}

template <class T, class I>
void max_pool_plane(const TypedKernels<T>& k, const T* src, T* o, I* oi, const Conv2dGeometry& g) {
  if (plain_2x2(g)) return max_pool_2x2_as(k, src, o, oi, g.W, g.Ho, g.Wo);
  if (windows_inside(g)) {
    // locals: the index stores could otherwise alias the geometry's fields
    const int64_t Ho = g.Ho, Wo = g.Wo, W = g.W, sh = g.sh, sw = g.sw, kh = g.kh, kw = g.kw;
    const int64_t rstep = g.dh * W, cstep = g.dw;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t base = oh * sh * W + ow * sw;
        T best = src[base];
        int64_t bi = base, bt = 0;
        for (int64_t ki = 0; ki < kh; ++ki)
          for (int64_t kj = 0; kj < kw; ++kj) {
            const int64_t at = base + ki * rstep + kj * cstep, tap = ki * kw + kj;
            const T v = src[at];
            // NaN wins, as in PyTorch. The choice is data-dependent, so it is made with masks:
            // a branch here mispredicts about half the time on real activations.
            const bool take = (v > best) | ((v != v) & (best == best));
            select_if(take, best, v);
            bi ^= (bi ^ at) & -int64_t(take);
            bt ^= (bt ^ tap) & -int64_t(take);
          }
        o[oh * Wo + ow] = best;
        oi[oh * Wo + ow] = winner<I>(bi, bt);
      }
    return;
  }
  for (int64_t oh = 0; oh < g.Ho; ++oh)
    for (int64_t ow = 0; ow < g.Wo; ++ow) {
      int64_t bi, bt;
      o[oh * g.Wo + ow] = pool::max_window(src, g, oh, ow, &bi, &bt);
      oi[oh * g.Wo + ow] = winner<I>(bi, bt);
    }
}

template <class F>
void for_planes(int64_t planes, int64_t work_per_plane, F&& f) {
  parallel_for(0, planes, grain_for(work_per_plane), [&](int64_t pl0_, int64_t pl1_) {
    for (int64_t pl = pl0_; pl < pl1_; ++pl) f(pl);
  });
}

}  // namespace

void CpuBackend::max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x,
                            const Pool2dGeometry& p) {
  visit_floating(x.dtype(), "max_pool2d", [&](auto tag) {
    visit_pool_indices(indices, [&](auto itag) {
      using T = typename decltype(tag)::type;
      using I = typename decltype(itag)::type;
      const Conv2dGeometry& g = p.g;
      const T* xp = x.data_ptr<T>();
      T* op = out.data_ptr<T>();
      I* ip = indices.data_ptr<I>();
      const int64_t HW = g.H * g.W, L = g.Ho * g.Wo;
      const auto& k = typed_kernels<T>();
      for_planes(x.size(0), L * g.kh * g.kw,
                 [&](int64_t pl) { max_pool_plane(k, xp + pl * HW, op + pl * L, ip + pl * L, g); });
    });
  });
}

void CpuBackend::max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices,
                                     const Pool2dGeometry& p) {
  visit_floating(gx.dtype(), "max_pool2d_backward", [&](auto tag) {
    visit_pool_indices(indices, [&](auto itag) {
      using T = typename decltype(tag)::type;
      using I = typename decltype(itag)::type;
      const Conv2dGeometry& g = p.g;
      T* gxp = gx.data_ptr<T>();
      const T* gyp = gy.data_ptr<T>();
      const I* ip = indices.data_ptr<I>();
      const int64_t HW = g.H * g.W, L = g.Ho * g.Wo;
      if constexpr (std::is_same_v<I, uint8_t>) {
        if (plain_2x2(g)) {  // every element written: no zeroing first
          const auto& k = typed_kernels<T>();
          for_planes(gx.size(0), HW + L, [&](int64_t pl) {
            k.max_pool_2x2_backward(gxp + pl * HW, gyp + pl * L, ip + pl * L, g.H, g.W, g.Ho, g.Wo);
          });
          return;
        }
      }
      // a tap's place relative to its window's top-left corner (a winner is never in the padding)
      std::vector<int64_t> tap_offset;
      if constexpr (std::is_same_v<I, uint8_t>) {
        MG_CHECK(g.kh * g.kw < kNoTap, "max_pool2d_backward: uint8 taps need a window of fewer than ",
                 int(kNoTap), " places, got ", g.kh, "x", g.kw);
        for (int64_t ki = 0; ki < g.kh; ++ki)
          for (int64_t kj = 0; kj < g.kw; ++kj) tap_offset.push_back(ki * g.dh * g.W + kj * g.dw);
        tap_offset.resize(256, 0);  // every uint8 reads inside the table
      }
      for_planes(gx.size(0), HW + L, [&](int64_t pl) {
        T* dst = gxp + pl * HW;
        const T* src = gyp + pl * L;
        const I* idx = ip + pl * L;
        std::fill(dst, dst + HW, T(0));
        if constexpr (std::is_same_v<I, int64_t>) {
          for (int64_t i = 0; i < L; ++i)
            if (idx[i] >= 0) dst[idx[i]] += src[i];
        } else {
          for (int64_t oh = 0; oh < g.Ho; ++oh)
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
              const int64_t corner = (oh * g.sh - g.pad_h) * g.W + ow * g.sw - g.pad_w;
              const uint8_t t = idx[oh * g.Wo + ow];
              if (t != kNoTap) dst[corner + tap_offset[t]] += src[oh * g.Wo + ow];
            }
        }
      });
    });
  });
}

void CpuBackend::avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dGeometry& p) {
  visit_floating(x.dtype(), "avg_pool2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Conv2dGeometry& g = p.g;
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    const int64_t HW = g.H * g.W, L = g.Ho * g.Wo;
    for_planes(x.size(0), HW + L, [&](int64_t pl) {
      const T* src = xp + pl * HW;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          const pool::Window w = pool::window(p, oh, ow);
          double s = 0;
          for (int64_t ih = w.h0; ih < w.h1; ++ih)
            for (int64_t iw = w.w0; iw < w.w1; ++iw) s += src[ih * g.W + iw];
          op[pl * L + oh * g.Wo + ow] = w.count > 0 ? T(s / double(w.count)) : T(0);
        }
    });
  });
}

void CpuBackend::avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dGeometry& p) {
  visit_floating(gx.dtype(), "avg_pool2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Conv2dGeometry& g = p.g;
    T* gxp = gx.data_ptr<T>();
    const T* gyp = gy.data_ptr<T>();
    const int64_t HW = g.H * g.W, L = g.Ho * g.Wo;
    for_planes(gx.size(0), HW + L, [&](int64_t pl) {
      T* dst = gxp + pl * HW;
      std::fill(dst, dst + HW, T(0));
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          const pool::Window w = pool::window(p, oh, ow);
          if (w.count <= 0) continue;
          const T v = gyp[pl * L + oh * g.Wo + ow] / T(w.count);
          for (int64_t ih = w.h0; ih < w.h1; ++ih)
            for (int64_t iw = w.w0; iw < w.w1; ++iw) dst[ih * g.W + iw] += v;
        }
    });
  });
}

}  // namespace minigrad::cpu
