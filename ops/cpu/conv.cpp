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
// Stride-1 convs without columns: im2col's traffic and, with few channels, tiny GEMMs cost more
// than the products. The kernels read a zero-padded copy of one image at a time. For groups with
// fewer than 16 output channels they keep OB output channels times PB vectors of V positions in
// registers: for each tap, one load of V inputs feeds OB fused multiply-adds; groups with 16 or
// more go to the channel-blocked kernels further down. The data gradient of a stride-1 conv is
// itself such a conv (of the zero-padded output gradient with the kernel flipped and in/out
// channels swapped), so it reuses the forward kernel; the weight gradient keeps per-thread sums,
// added up at the end (no atomics).

namespace minigrad::cpu {

namespace {

constexpr int V = 16;    // output positions per vector
constexpr int kOB = 8;   // output channels per register block

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The zero-padded image the kernels read for output positions of g: Hp x Wp, so that every tap of
// every V-wide block of a row (the last one reaching Wq = Wo rounded up to V) stays inside.
struct PaddedPlane {
  int64_t Hp, Wq, Wp;
  explicit PaddedPlane(const Conv2dGeometry& g)
      : Hp(g.Ho + (g.kh - 1) * g.dh), Wq(round_up(g.Wo, V)), Wp(Wq + (g.kw - 1) * g.dw) {}
};

// The zero-padded image that the forward kernels read: C planes of Hp x Wp (Wp = Wo + the dilated
// kernel's width). They run over positions p = oh*Wp + ow of the plane, rows included, so that
// narrow rows fill the registers too; the Wp - Wo columns past each row are computed and dropped.
// The slack after the last plane holds the dropped positions of the last register block.
struct PitchedPlane {
  static constexpr int64_t kSlack = 128;  // >= the positions of any register block
  int64_t Hp, Wp, plane, size;
  PitchedPlane(const Conv2dGeometry& g, int64_t C)
      : Hp(g.Ho + (g.kh - 1) * g.dh), Wp(g.Wo + (g.kw - 1) * g.dw), plane(Hp * Wp), size(C * plane + kSlack + Wp) {}
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
// wr[((c*kh + i)*kw + j)*Og + o] * xp[c][oh + i*dh][ow + j*dw], PB vectors of V positions of the
// pitched plane at a time (OB*PB sums in registers). The sums go to part ([o][ppitch]), then to y.
template <class T, int OB>
void direct_block(T* y, int64_t L, const T* xp, const PitchedPlane& pp, const T* wr, int64_t Og, int64_t Cg,
                  T* part, int64_t ppitch, const Conv2dGeometry& g) {
  constexpr int PB = std::clamp(24 / OB, 1, 8);
  const int64_t P = g.Ho * pp.Wp;
  for (int64_t p0 = 0; p0 < P; p0 += PB * V) {
    T acc[OB][PB][V] = {};
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t i = 0; i < g.kh; ++i) {
        const T* xr = xp + c * pp.plane + i * g.dh * pp.Wp + p0;
        const T* wi = wr + (c * g.kh + i) * g.kw * Og;
        for (int64_t j = 0; j < g.kw; ++j) {
          const T* xv = xr + j * g.dw;
          const T* wj = wi + j * Og;
#pragma GCC unroll 8
          for (int o = 0; o < OB; ++o) {
            const T a = wj[o];
#pragma GCC unroll 8
            for (int b = 0; b < PB; ++b)
#pragma omp simd
              for (int l = 0; l < V; ++l) acc[o][b][l] += a * xv[b * V + l];
          }
        }
      }
    for (int o = 0; o < OB; ++o) std::copy(&acc[o][0][0], &acc[o][0][0] + PB * V, part + o * ppitch + p0);
  }
  for (int o = 0; o < OB; ++o)
    for (int64_t oh = 0; oh < g.Ho; ++oh)
      std::copy(part + o * ppitch + oh * pp.Wp, part + o * ppitch + oh * pp.Wp + g.Wo, y + o * L + oh * g.Wo);
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

// w (G*Og, Cg, kh*kw) packed as the direct kernels' weight [grp][out / B][in][tap][out % B], zero
// past the last output. For the forward conv in = c and out = o; for the data gradient (flipped)
// in = o, out = c and the taps reversed: [grp][o][i'][j'][c] = w[grp*Og + o][c][kh-1-i'][kw-1-j'].
// The small-group kernels take one block as wide as the outputs (B = 0 asks for that, giving
// [grp][in][tap][out]); the channel-blocked ones blocks of B = 16.
template <class T>
std::vector<T> pack_weight(const T* wp, int64_t G, int64_t Og, int64_t Cg, int64_t kk, bool flipped, int64_t B = 0) {
  const int64_t nout = flipped ? Cg : Og, nin = flipped ? Og : Cg;
  if (B == 0) B = nout;
  const int64_t nblk = (nout + B - 1) / B;
  std::vector<T> wr(size_t(G * nblk * nin * kk * B), T(0));
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < kk; ++t) {
          const int64_t out = flipped ? c : o, in = flipped ? o : c, tap = flipped ? kk - 1 - t : t;
          wr[size_t((((grp * nblk + out / B) * nin + in) * kk + tap) * B + out % B)] =
              wp[((grp * Og + o) * Cg + c) * kk + t];
        }
  return wr;
}

// y (N, G*Og, Ho, Wo) = the stride-1 conv of x (N, C, H, W) with repacked weights
// wr[grp][c][i][j][o] (Og output channels per group).
template <class T>
void direct_forward(T* y, const T* x, const T* wr, int64_t N, int64_t G, int64_t Og, const Conv2dGeometry& g) {
  const int64_t Cg = g.C / G, kk = g.kh * g.kw, L = g.Ho * g.Wo;
  const PitchedPlane pp(g, g.C);
  const int64_t ppitch = g.Ho * pp.Wp + 8 * V;  // room for every block size PB*V past the last position
  const bool par = N > 1 && N * G * Og * Cg * kk * L >= kParallelGrain;
#pragma omp parallel if (par)
  {
    std::vector<T> xp(size_t(pp.size), T(0)), part(size_t(kOB * ppitch));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      pad_planes(xp.data(), x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.pad_h, g.pad_w, pp.Hp, pp.Wp);
      for (int64_t grp = 0; grp < G; ++grp)
        for (int64_t o0 = 0; o0 < Og; o0 += kOB)
          with_block(std::min<int64_t>(kOB, Og - o0), [&]<int OB>() {
            direct_block<T, OB>(y + ((n * G + grp) * Og + o0) * L, L, xp.data() + grp * Cg * pp.plane, pp,
                                wr + grp * Cg * kk * Og + o0, Og, Cg, part.data(), ppitch, g);
          });
    }
  }
}

// ---- channel-blocked direct kernels (16 or more output channels per group)
//
// With many output channels the kernels above reload the same input row once per 8 outputs. These
// put 16 output channels in the lanes of a vector instead and kR output positions in registers:
// for each tap, one load of 16 weights feeds kR fused multiply-adds, each broadcasting one input
// value straight from memory. Positions run over the padded plane with its own pitch Wp, rows
// included, so narrow rows fill the registers too; the Wp - Wo columns past each row are computed
// and dropped. The weight gradient puts the same 16 output channels in the lanes of its sums and
// keeps a block of taps (one or more kernel rows, KW taps each) in registers: one load of the
// output gradient at a position feeds every tap of the block.

constexpr int kLanes = 16;  // output channels per vector
constexpr int kR = 24;      // output positions per register block

// Whether a group with Og output channels goes to the channel-blocked kernels.
inline bool channel_blocked(int64_t Og) { return Og >= kLanes; }

// One image, one group, NV blocks of 16 output channels (nb <= 16*NV of them real):
// y[l][oh][ow] = sum over c, i, j of wb[v][((c*kh + i)*kw + j)*16 + l % 16] * xp[c][oh + i*dh][ow + j*dw],
// v = l / 16, the blocks wstride apart. Each broadcast input feeds NV vectors. The input channels
// go in chunks whose weights stay in L1, the running sums in part ([position][NV][16]) between them
// and at the end.
template <class T, int NV>
void blocked_forward_block(T* y, int64_t L, int64_t nb, const T* xp, const PitchedPlane& pp, const T* wb,
                           int64_t wstride, int64_t Cg, T* part, const Conv2dGeometry& g) {
  constexpr int R = kR / NV;
  const int64_t P = g.Ho * pp.Wp, kk = g.kh * g.kw;
  const int64_t chunk = std::max<int64_t>(1, (16 << 10) / (kk * NV * kLanes * int64_t(sizeof(T))));
  for (int64_t c0 = 0; c0 < Cg; c0 += chunk) {
    const int64_t c1 = std::min(Cg, c0 + chunk);
    for (int64_t p0 = 0; p0 < P; p0 += R) {
      T acc[R][NV][kLanes];
      T* pp0 = part + p0 * NV * kLanes;
      if (c0 == 0) std::fill(&acc[0][0][0], &acc[0][0][0] + R * NV * kLanes, T(0));
      else std::copy(pp0, pp0 + R * NV * kLanes, &acc[0][0][0]);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < g.kh; ++i) {
          const T* xr = xp + c * pp.plane + i * g.dh * pp.Wp + p0;
          const T* wi = wb + (c * g.kh + i) * g.kw * kLanes;
          for (int64_t j = 0; j < g.kw; ++j) {
            const T* xv = xr + j * g.dw;
            const T* wv = wi + j * kLanes;
#pragma GCC unroll 24
            for (int r = 0; r < R; ++r) {
              const T a = xv[r];
#pragma GCC unroll 2
              for (int v = 0; v < NV; ++v)
#pragma omp simd
                for (int l = 0; l < kLanes; ++l) acc[r][v][l] += a * wv[v * wstride + l];
            }
          }
        }
      std::copy(&acc[0][0][0], &acc[0][0][0] + R * NV * kLanes, pp0);
    }
  }
  // Output plane by output plane: stores 16*NV planes apart would keep evicting each other.
  for (int64_t l = 0; l < nb; ++l)
    for (int64_t oh = 0; oh < g.Ho; ++oh)
      for (int64_t ow = 0; ow < g.Wo; ++ow) y[l * L + oh * g.Wo + ow] = part[(oh * pp.Wp + ow) * NV * kLanes + l];
}

// y (N, G*Og, Ho, Wo) = the stride-1 conv of x (N, C, H, W) with weights packed by
// pack_weight with blocks of 16 (Og output channels per group).
template <class T>
void blocked_forward(T* y, const T* x, const T* wr, int64_t N, int64_t G, int64_t Og, const Conv2dGeometry& g) {
  const int64_t Cg = g.C / G, kk = g.kh * g.kw, L = g.Ho * g.Wo, nblk = (Og + kLanes - 1) / kLanes;
  const PitchedPlane pp(g, g.C);
  const bool par = N > 1 && N * G * Og * Cg * kk * L >= kParallelGrain;
#pragma omp parallel if (par)
  {
    std::vector<T> xp(size_t(pp.size), T(0)), part(size_t((g.Ho * pp.Wp + kR) * 2 * kLanes));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      pad_planes(xp.data(), x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.pad_h, g.pad_w, pp.Hp, pp.Wp);
      for (int64_t grp = 0; grp < G; ++grp)
        for (int64_t b = 0; b < nblk;) {  // two blocks at a time while there are two
          const int64_t nb = std::min<int64_t>(2 * kLanes, Og - b * kLanes);
          T* yb = y + ((n * G + grp) * Og + b * kLanes) * L;
          const T* xg = xp.data() + grp * Cg * pp.plane;
          const T* wb = wr + (grp * nblk + b) * Cg * kk * kLanes;
          if (nb > kLanes) blocked_forward_block<T, 2>(yb, L, nb, xg, pp, wb, Cg * kk * kLanes, Cg, part.data(), g), b += 2;
          else blocked_forward_block<T, 1>(yb, L, nb, xg, pp, wb, 0, Cg, part.data(), g), b += 1;
        }
    }
  }
}

// Weight-gradient block over NR kernel rows of KW taps each: dst[r][j*16 + l] += the sum over the
// valid positions p = oh*Wp + ow of rows[r][p + j*dw] * gyt[p*16 + l].
template <class T, int KW, int NR>
void blocked_weight_block(T* const* dst, const T* const* rows, const T* gyt, int64_t Wp, int64_t dw,
                          const Conv2dGeometry& g) {
  T acc[NR][KW][kLanes];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < KW; ++j) std::copy(dst[r] + j * kLanes, dst[r] + (j + 1) * kLanes, acc[r][j]);
  for (int64_t oh = 0; oh < g.Ho; ++oh)
    for (int64_t p = oh * Wp; p < oh * Wp + g.Wo; ++p) {
      const T* gv = gyt + p * kLanes;
#pragma GCC unroll 24
      for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
          const T a = rows[r][p + j * dw];
#pragma omp simd
          for (int l = 0; l < kLanes; ++l) acc[r][j][l] += a * gv[l];
        }
    }
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < KW; ++j) std::copy(acc[r][j], acc[r][j] + kLanes, dst[r] + j * kLanes);
}

// Adds the weight gradient of one image and one block of 16 output channels to acc, laid out as
// [in][tap][16]: gyt is that block's output gradient as [position][16], xp the group's padded
// input. A "row" is KW consecutive taps of one kernel row; rows are taken NR at a time, the last
// block padded with rows that read zeros and write to scratch.
template <class T, int KW, int NR>
void blocked_weight_rows(T* acc, const T* xp, const PitchedPlane& pp, const T* gyt, const T* zeros, T* scratch,
                         int64_t Cg, const Conv2dGeometry& g) {
  const int64_t per_kernel_row = g.kw / KW, nrows = Cg * g.kh * per_kernel_row;
  for (int64_t r0 = 0; r0 < nrows; r0 += NR) {
    T* dst[NR];
    const T* rows[NR];
    for (int r = 0; r < NR; ++r) {
      const int64_t row = r0 + r;
      if (row >= nrows) {
        dst[r] = scratch + r * KW * kLanes;
        rows[r] = zeros;
        continue;
      }
      const int64_t ci = row / per_kernel_row, j0 = row % per_kernel_row * KW, c = ci / g.kh, i = ci % g.kh;
      dst[r] = acc + ((c * g.kh + i) * g.kw + j0) * kLanes;
      rows[r] = xp + c * pp.plane + i * g.dh * pp.Wp + j0 * g.dw;
    }
    blocked_weight_block<T, KW, NR>(dst, rows, gyt, pp.Wp, g.dw, g);
  }
}

// dw (G*Og, Cg, kh, kw) += the weight gradient of the stride-1 conv y = conv(x, w), from
// gy (N, G*Og, Ho, Wo) and x (N, C, H, W); each thread sums its images into [grp][blk][in][tap][16].
template <class T>
void blocked_weight(T* dw, const T* gy, const T* x, int64_t N, int64_t G, int64_t Og, const Conv2dGeometry& g) {
  const int64_t Cg = g.C / G, kk = g.kh * g.kw, L = g.Ho * g.Wo, nblk = (Og + kLanes - 1) / kLanes;
  const PitchedPlane pp(g, g.C);
  const int64_t P = g.Ho * pp.Wp, blk_size = Cg * kk * kLanes, wsize = G * nblk * blk_size;
  const bool par = N > 1 && N * G * Og * Cg * kk * L >= kParallelGrain;
  const int nt = par ? omp_get_max_threads() : 1;
  std::vector<T> part(size_t(nt * wsize), T(0));
  const std::vector<T> zeros(size_t(P + g.kw * g.dw), T(0));
#pragma omp parallel num_threads(nt)
  {
    T* acc = part.data() + omp_get_thread_num() * wsize;
    std::vector<T> xp(size_t(pp.size), T(0)), gyt(size_t(P * kLanes), T(0)), scratch(size_t(32 * kLanes));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      pad_planes(xp.data(), x + n * g.C * g.H * g.W, g.C, g.H, g.W, g.pad_h, g.pad_w, pp.Hp, pp.Wp);
      for (int64_t grp = 0; grp < G; ++grp)
        for (int64_t b = 0; b < nblk; ++b) {
          const int64_t nb = std::min<int64_t>(kLanes, Og - b * kLanes);
          const T* gs = gy + ((n * G + grp) * Og + b * kLanes) * L;
          for (int64_t oh = 0; oh < g.Ho; ++oh)  // [position][lane], zeros past nb
            for (int64_t ow = 0; ow < g.Wo; ++ow)
              for (int64_t l = 0; l < kLanes; ++l)
                gyt[size_t((oh * pp.Wp + ow) * kLanes + l)] = l < nb ? gs[l * L + oh * g.Wo + ow] : T(0);
          T* a = acc + (grp * nblk + b) * blk_size;
          const T* xg = xp.data() + grp * Cg * pp.plane;
          if (g.kw % 5 == 0) blocked_weight_rows<T, 5, 5>(a, xg, pp, gyt.data(), zeros.data(), scratch.data(), Cg, g);
          else if (g.kw % 3 == 0) blocked_weight_rows<T, 3, 8>(a, xg, pp, gyt.data(), zeros.data(), scratch.data(), Cg, g);
          else if (g.kw % 2 == 0) blocked_weight_rows<T, 2, 12>(a, xg, pp, gyt.data(), zeros.data(), scratch.data(), Cg, g);
          else blocked_weight_rows<T, 1, 16>(a, xg, pp, gyt.data(), zeros.data(), scratch.data(), Cg, g);
        }
    }
  }
  for (int64_t grp = 0; grp < G; ++grp)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < kk; ++t) {
          T s = 0;
          for (int th = 0; th < nt; ++th)
            s += part[size_t(th * wsize + (grp * nblk + o / kLanes) * blk_size + (c * kk + t) * kLanes + o % kLanes)];
          dw[((grp * Og + o) * Cg + c) * kk + t] += s;
        }
}

}  // namespace

void CpuBackend::conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                               int64_t groups) {
  visit_floating(x.dtype(), "conv2d_direct", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t G = groups, Og = w.size(0) / G, Cg = g.C / G, kk = g.kh * g.kw;
    const T* wp = w.data_ptr<T>();
    if (channel_blocked(Og)) {
      std::vector<T> wr = pack_weight(wp, G, Og, Cg, kk, /*flipped=*/false, kLanes);
      blocked_forward<T>(y.data_ptr<T>(), x.data_ptr<T>(), wr.data(), x.size(0), G, Og, g);
      return;
    }
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
    const Conv2dGeometry gt{G * Og, g.Ho, g.Wo, g.kh, g.kw, 1, 1, g.dh * (g.kh - 1) - g.pad_h,
                            g.dw * (g.kw - 1) - g.pad_w, g.dh, g.dw, g.H, g.W};
    if (channel_blocked(Cg)) {
      std::vector<T> wr = pack_weight(wp, G, Og, Cg, kk, /*flipped=*/true, kLanes);
      blocked_forward<T>(dx.data_ptr<T>(), gy.data_ptr<T>(), wr.data(), gy.size(0), G, Cg, gt);
      return;
    }
    std::vector<T> wr = pack_weight(wp, G, Og, Cg, kk, /*flipped=*/true);
    direct_forward<T>(dx.data_ptr<T>(), gy.data_ptr<T>(), wr.data(), gy.size(0), G, Cg, gt);
  });
}

void CpuBackend::conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x,
                                      const Conv2dGeometry& g, int64_t groups) {
  visit_floating(x.dtype(), "conv2d_direct_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = x.size(0), G = groups, Og = dw.size(0) / G, Cg = g.C / G, kk = g.kh * g.kw;
    if (channel_blocked(Og)) {
      blocked_weight<T>(dw.data_ptr<T>(), gy.data_ptr<T>(), x.data_ptr<T>(), N, G, Og, g);
      return;
    }
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
