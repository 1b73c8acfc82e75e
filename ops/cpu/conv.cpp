// CPU im2col / col2im. im2col is parallel over (image, column row); col2im over (image, channel),
// since a channel's rows only ever write that channel's plane.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

// ---- direct convolution (stride 1)
//
// For convs with few channels the GEMMs of unfold + GEMM are tiny and im2col's traffic dominates.
// These kernels read a zero-padded copy of one image at a time (no columns) and keep a block of
// output channels times V output positions in registers: for each tap, one load of V inputs feeds
// OB fused multiply-adds. The data gradient of a stride-1 conv is itself such a conv (of the
// zero-padded output gradient with the kernel flipped and in/out channels swapped), so it reuses
// the forward kernel; the weight gradient keeps per-thread sums, added up at the end (no atomics).

namespace minigrad::cpu {

namespace {

constexpr int V = 16;    // output positions per register block
constexpr int kOB = 8;   // output channels per register block

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The zero-padded image the kernels read for output positions of g: Hp x Wp, so that every tap of
// every V-wide block of a row (the last one reaching Wq = Wo rounded up to V) stays inside.
struct PaddedPlane {
  int64_t Hp, Wq, Wp;
  explicit PaddedPlane(const Conv2dGeometry& g)
      : Hp(g.Ho + (g.kh - 1) * g.dh), Wq(round_up(g.Wo, V)), Wp(Wq + (g.kw - 1) * g.dw) {}
};

// dst (C, Hp, Wp) = src (C, H, W) shifted down by pt rows and right by pl columns, zeros elsewhere
// (negative pt/pl crop).
template <class T>
void pad_planes(T* dst, const T* src, int64_t C, int64_t H, int64_t W, int64_t pt, int64_t pl, int64_t Hp,
                int64_t Wp) {
  const int64_t c0 = std::max<int64_t>(0, -pl), c1 = std::min<int64_t>(W, Wp - pl);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < Hp; ++r) {
      T* d = dst + (c * Hp + r) * Wp;
      const int64_t sr = r - pt;
      std::fill(d, d + Wp, T(0));
      if (sr < 0 || sr >= H || c1 <= c0) continue;
      std::copy(src + (c * H + sr) * W + c0, src + (c * H + sr) * W + c1, d + c0 + pl);
    }
}

// One image, one group, OB output channels: y[o][oh][ow] = sum over c, i, j of
// wr[((c*kh + i)*kw + j)*Og + o] * xp[c][oh + i*dh][ow + j*dw].
template <class T, int OB>
void direct_block(T* y, int64_t y_plane, const T* xp, int64_t Hp, int64_t Wp, const T* wr, int64_t Og,
                  int64_t Cg, const Conv2dGeometry& g) {
  for (int64_t oh = 0; oh < g.Ho; ++oh)
    for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += V) {
      T acc[OB][V] = {};
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t i = 0; i < g.kh; ++i) {
          const T* xr = xp + (c * Hp + oh + i * g.dh) * Wp + ow0;
          const T* wi = wr + (c * g.kh + i) * g.kw * Og;
          for (int64_t j = 0; j < g.kw; ++j) {
            const T* xv = xr + j * g.dw;
            const T* wj = wi + j * Og;
            for (int o = 0; o < OB; ++o) {
              const T a = wj[o];
#pragma omp simd
              for (int l = 0; l < V; ++l) acc[o][l] += a * xv[l];
            }
          }
        }
      const int64_t n = std::min<int64_t>(V, g.Wo - ow0);
      for (int o = 0; o < OB; ++o) std::copy(acc[o], acc[o] + n, y + o * y_plane + oh * g.Wo + ow0);
    }
}

// Weight-gradient block: dwv[((c*kh + i)*kw + j)*Og + o][l] += the lane-l part of the sum over
// oh, ow of gyp[o][oh][ow] * xp[c][oh + i*dh][ow + j*dw] (gyp rows padded with zeros to Wq). The
// lanes are added up once, after the last image: a per-tap horizontal sum would cost as much as
// the products on small planes.
template <class T, int OB>
void direct_weight_block(T* dwv, const T* gyp, int64_t Wq, const T* xp, int64_t Hp, int64_t Wp, int64_t Og,
                         int64_t Cg, const Conv2dGeometry& g) {
  const int64_t gy_plane = g.Ho * Wq;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* d = dwv + ((c * g.kh + i) * g.kw + j) * Og * V;
        T acc[OB][V];
        for (int o = 0; o < OB; ++o) std::copy(d + o * V, d + (o + 1) * V, acc[o]);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const T* xr = xp + (c * Hp + oh + i * g.dh) * Wp + j * g.dw;
          const T* gr = gyp + oh * Wq;
          for (int64_t ow0 = 0; ow0 < Wq; ow0 += V)
            for (int o = 0; o < OB; ++o) {
              const T* gv = gr + o * gy_plane + ow0;
#pragma omp simd
              for (int l = 0; l < V; ++l) acc[o][l] += gv[l] * xr[ow0 + l];
            }
        }
        for (int o = 0; o < OB; ++o) std::copy(acc[o], acc[o] + V, d + o * V);
      }
}

// Calls f.template operator()<nb>() for nb = 1..kOB (a compile-time register block).
template <class F>
void with_block(int64_t nb, F&& f) {
  switch (nb) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    case 4: f.template operator()<4>(); break;
    case 5: f.template operator()<5>(); break;
    case 6: f.template operator()<6>(); break;
    case 7: f.template operator()<7>(); break;
    default: f.template operator()<8>(); break;
  }
}

// w (G*Og, Cg, kh*kw) packed as the direct kernels' weight [grp][in][tap][out]. For the forward
// conv in = c and out = o; for the data gradient (flipped) in = o, out = c and the taps reversed:
// [grp][o][i'][j'][c] = w[grp*Og + o][c][kh-1-i'][kw-1-j'].
template <class T>
std::vector<T> pack_weight(const T* wp, int64_t G, int64_t Og, int64_t Cg, int64_t kk, bool flipped) {
  std::vector<T> wr(size_t(G * Og * Cg * kk));
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < kk; ++t) {
          const T v = wp[((grp * Og + o) * Cg + c) * kk + t];
          if (flipped) wr[size_t(((grp * Og + o) * kk + (kk - 1 - t)) * Cg + c)] = v;
          else wr[size_t(((grp * Cg + c) * kk + t) * Og + o)] = v;
        }
  return wr;
}

// y (N, G*Og, Ho, Wo) = the stride-1 conv of x (N, C, H, W) with repacked weights
// wr[grp][c][i][j][o] (Og output channels per group).
template <class T>
void direct_forward(T* y, const T* x, const T* wr, int64_t N, int64_t G, int64_t Og, const Conv2dGeometry& g) {
  const int64_t Cg = g.C / G, kk = g.kh * g.kw, L = g.Ho * g.Wo;
  const auto [Hp, Wq, Wp] = PaddedPlane(g);
  const bool par = N > 1 && N * G * Og * Cg * kk * L >= kParallelGrain;
#pragma omp parallel if (par)
  {
    std::vector<T> xp(size_t(g.C * Hp * Wp));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      pad_planes(xp.data(), x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.pad_h, g.pad_w, Hp, Wp);
      for (int64_t grp = 0; grp < G; ++grp)
        for (int64_t o0 = 0; o0 < Og; o0 += kOB)
          with_block(std::min<int64_t>(kOB, Og - o0), [&]<int OB>() {
            direct_block<T, OB>(y + ((n * G + grp) * Og + o0) * L, L, xp.data() + grp * Cg * Hp * Wp, Hp, Wp,
                                wr + grp * Cg * kk * Og + o0, Og, Cg, g);
          });
    }
  }
}

}  // namespace

void CpuBackend::conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                               int64_t groups) {
  visit_floating(x.dtype(), "conv2d_direct", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t G = groups, Og = w.size(0) / G, Cg = g.C / G, kk = g.kh * g.kw;
    const T* wp = w.data_ptr<T>();
    std::vector<T> wr = pack_weight(wp, G, Og, Cg, kk, /*flipped=*/false);
    direct_forward<T>(y.data_ptr<T>(), x.data_ptr<T>(), wr.data(), x.size(0), G, Og, g);
  });
}

void CpuBackend::conv2d_direct_data(const Tensor& dx, const Tensor& gy, const Tensor& w, const Conv2dGeometry& g,
                                    int64_t groups) {
  visit_floating(gy.dtype(), "conv2d_direct_data", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t G = groups, Og = w.size(0) / G, Cg = g.C / G, kk = g.kh * g.kw;
    const T* wp = w.data_ptr<T>();
    // The flipped kernel with in/out swapped: a forward weight with Cg outputs per group.
    std::vector<T> wr = pack_weight(wp, G, Og, Cg, kk, /*flipped=*/true);
    Conv2dGeometry gt{G * Og, g.Ho, g.Wo, g.kh, g.kw, 1, 1, g.dh * (g.kh - 1) - g.pad_h,
                      g.dw * (g.kw - 1) - g.pad_w, g.dh, g.dw, g.H, g.W};
    direct_forward<T>(dx.data_ptr<T>(), gy.data_ptr<T>(), wr.data(), gy.size(0), G, Cg, gt);
  });
}

void CpuBackend::conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x,
                                      const Conv2dGeometry& g, int64_t groups) {
  visit_floating(x.dtype(), "conv2d_direct_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), G = groups, Og = dw.size(0) / G, Cg = g.C / G, kk = g.kh * g.kw;
    const auto [Hp, Wq, Wp] = PaddedPlane(g);
    const int64_t Cout = G * Og, L = g.Ho * g.Wo, wsize = G * Cg * kk * Og;
    const T* xs = x.data_ptr<T>();
    const T* gs = gy.data_ptr<T>();
    const bool par = N > 1 && N * Cout * Cg * kk * L >= kParallelGrain;
    const int nt = par ? omp_get_max_threads() : 1;
    std::vector<T> part(size_t(nt * wsize * V), T(0));  // per-thread lane sums, [grp][c][tap][o][lane]
#pragma omp parallel num_threads(nt)
    {
      T* acc = part.data() + omp_get_thread_num() * wsize * V;
      std::vector<T> xp(size_t(g.C * Hp * Wp)), gyp(size_t(Cout * g.Ho * Wq));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        pad_planes(xp.data(), xs + n * g.C * g.H * g.W, g.C, g.H, g.W, g.pad_h, g.pad_w, Hp, Wp);
        pad_planes(gyp.data(), gs + n * Cout * L, Cout, g.Ho, g.Wo, 0, 0, g.Ho, Wq);
        for (int64_t grp = 0; grp < G; ++grp)
          for (int64_t o0 = 0; o0 < Og; o0 += kOB)
            with_block(std::min<int64_t>(kOB, Og - o0), [&]<int OB>() {
              direct_weight_block<T, OB>(acc + (grp * Cg * kk * Og + o0) * V, gyp.data() + (grp * Og + o0) * g.Ho * Wq,
                                         Wq, xp.data() + grp * Cg * Hp * Wp, Hp, Wp, Og, Cg, g);
            });
      }
    }
    T* d = dw.data_ptr<T>();
    for (int64_t grp = 0; grp < G; ++grp)
      for (int64_t o = 0; o < Og; ++o)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t t = 0; t < kk; ++t) {
            T s = 0;
            for (int th = 0; th < nt; ++th) {
              const T* lanes = part.data() + (th * wsize + ((grp * Cg + c) * kk + t) * Og + o) * V;
              for (int l = 0; l < V; ++l) s += lanes[l];
            }
            d[((grp * Og + o) * Cg + c) * kk + t] += s;
          }
  });
}

}  // namespace minigrad::cpu
