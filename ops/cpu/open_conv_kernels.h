// minigrad: the open convolution's fused CPU kernels. They are templates on the user's combine
// functor, so they compile in the user's translation unit; each is instantiated once per vector
// level (generic, AVX2+FMA, AVX-512 on x86-64, through target attributes) and the level running is
// chosen at run time like the plain conv's (cpu_isa(), MINIGRAD_CPU_ISA).
//
// Forward (Sum, Max, Min) and the Sum backward run register blocks of RB output channels x NV
// vectors of positions: per patch row k, the NV vectors of patch values are loaded once and met
// with RB weights, the functor evaluated over the lanes of each vector (a loop the compiler
// vectorises: `?:` becomes a blend, cf:: math the vector forms of ops/cf_math.h), the accumulators
// kept in registers. A term of the functor that depends on x alone is the same for the RB weights
// of a block and the compiler computes it once (cf:: functions are `const`). Max / Min backward
// recompute the winners with the same blocks; user reductions keep the scalar kernels below.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../core/cpu_isa.h"
#include "../../core/parallel.h"
#include "../open_conv_vocab.h"

namespace minigrad::open_conv_detail {


#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define MG_OC_BLOCKED 1
// ---- register-blocked kernels

template <int VB, class T>
struct OcVec;
#define MG_OC_VEC(VB)                                                   \
  template <>                                                           \
  struct OcVec<VB, float> {                                             \
    typedef float v __attribute__((vector_size(VB)));                   \
  };                                                                    \
  template <>                                                           \
  struct OcVec<VB, double> {                                            \
    typedef double v __attribute__((vector_size(VB)));                  \
  };
MG_OC_VEC(16)
MG_OC_VEC(32)
MG_OC_VEC(64)
#undef MG_OC_VEC

// RB output channels x NV vectors: 16 accumulators of the 32 AVX-512 registers, 8 of the 16 at
// AVX2 and SSE2, leaving the rest to the functor's temporaries.
template <int VB>
struct OcShape {
  static constexpr int RB = 4, NV = VB == 64 ? 4 : 2;
  // backward: RBB channels x NVB vectors (dW's RBB vector sums, NVB patch and dcols vectors);
  // measured at AVX-512 (L1, 1 thread): 8 x 4 12.9 ms against 4 x 4 17.5 and 8 x 2 12.4-14.2
  static constexpr int RBB = VB == 64 ? 8 : 4, NVB = VB == 64 ? 4 : 2;
  // the positions one forward (or backward) block covers, in elements of T
  template <class T>
  static constexpr int64_t span(bool backward) {
    return int64_t(backward ? NVB : NV) * (VB / int64_t(sizeof(T)));
  }
};

// r = comb(x, w) on every lane.
template <int W, class C, class V, class T>
[[gnu::always_inline]] inline void oc_lanes(const C& comb, const V& x, T w, V& r) {
#pragma omp simd
  for (int l = 0; l < W; ++l) r[l] = T(comb(x[l], w));
}
// Both derivatives on every lane.
template <int W, class C, class V, class T>
[[gnu::always_inline]] inline void oc_lanes_d(const C& comb, const V& x, T w, V& dx, V& dw) {
#pragma omp simd
  for (int l = 0; l < W; ++l) {
    T a, b;
    derivatives(comb, x[l], w, a, b);
    dx[l] = a;
    dw[l] = b;
  }
}
// The sum of the lanes, by halves.
template <int VB, class T>
[[gnu::always_inline]] inline T oc_hsum(const typename OcVec<VB, T>::v& v) {
  if constexpr (VB == 16) {
    T s = v[0];
    for (int l = 1; l < int(16 / sizeof(T)); ++l) s += v[l];
    return s;
  } else {
    typename OcVec<VB / 2, T>::v lo, hi;
    std::memcpy(&lo, &v, VB / 2);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + VB / 2, VB / 2);
    const typename OcVec<VB / 2, T>::v s = lo + hi;
    return oc_hsum<VB / 2, T>(s);
  }
}

// Red: 0 sum, 1 max, 2 min; 3 max and 4 min where no value can be NaN (every input finite and a
// combine that declares no_nan_from_finite): one compare a value instead of two.
template <class R>
constexpr int oc_red = std::is_same_v<R, reduce::Max> ? 1 : std::is_same_v<R, reduce::Min> ? 2 : 0;
template <int Red>
constexpr bool oc_is_max = Red == 1 || Red == 3;
template <class T, int Red>
constexpr T oc_identity() {
  return Red == 0 ? T(0) : oc_is_max<Red> ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
}
template <class C>
constexpr bool oc_no_nan_from_finite = requires { requires C::no_nan_from_finite; };
// Whether every value is finite, by its exponent bits (so -ffast-math cannot fold it away); no early
// exit, so the loop vectorises.
template <class T>
bool oc_all_finite(const T* v, int64_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U e = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U b;
    std::memcpy(&b, v + i, sizeof b);
    bad |= U((b & e) == e);
  }
  return bad == 0;
}

// out[r, q0 + j] for r < RB, j < NV*W from the group's columns cg (K rows of L) and weights wr
// (RB rows of K); with Track, the winning k into win (same layout as out).
template <int VB, int RB, int NV, int Red, bool Track, class T, class C>
[[gnu::always_inline]] inline void oc_fwd_block(const C& comb, const T* cg, const T* wr, T* out, int32_t* win,
                                                int64_t K, int64_t L) {
  using V = typename OcVec<VB, T>::v;
  using M = decltype(V{} > V{});
  using ME = std::remove_reference_t<decltype(M{}[0])>;
  constexpr int W = VB / int(sizeof(T));
  constexpr T id = oc_identity<T, Red>();
  V acc[RB][NV];
  M wi[RB][NV];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = V{} + id;
      wi[r][v] = M{};
    }
  for (int64_t k = 0; k < K; ++k) {
    V xv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(&xv[v], cg + k * L + v * W, sizeof(V));
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r) {
      const T wk = wr[r * K + k];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        V val;
        oc_lanes<W>(comb, xv[v], wk, val);
        if constexpr (Red == 0) {
          acc[r][v] += val;
        } else {
          // A NaN wins and stays (the first one), as in max_pool2d and PyTorch's max: take when
          // the running value is not NaN and val is not <= (>=) it, NaN included.
          M take;
          if constexpr (Red <= 2)
            take = (Red == 1 ? ~(val <= acc[r][v]) : ~(val >= acc[r][v])) & (acc[r][v] == acc[r][v]);
          else
            take = Red == 3 ? val > acc[r][v] : val < acc[r][v];
          acc[r][v] = take ? val : acc[r][v];
          if constexpr (Track) wi[r][v] = take ? M{} + ME(k) : wi[r][v];
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      std::memcpy(out + r * L + v * W, &acc[r][v], sizeof(V));
      if constexpr (Track)
        for (int l = 0; l < W; ++l) win[r * L + v * W + l] = int32_t(wi[r][v][l]);
    }
}

// The same for positions [q0, q1) fewer than one vector, lane by lane.
template <int Red, bool Track, class T, class C>
inline void oc_fwd_tail(const C& comb, const T* cg, const T* wr, T* out, int32_t* win, int64_t K, int64_t L,
                        int64_t rows, int64_t q0, int64_t q1) {
  constexpr T id = oc_identity<T, Red>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = q0; q < q1; ++q) {
      T acc = id;
      int32_t wk = 0;
      for (int64_t k = 0; k < K; ++k) {
        const T val = T(comb(cg[k * L + q], wr[r * K + k]));
        if constexpr (Red == 0) {
          acc += val;
        } else {
          const bool take = Red <= 2 ? (Red == 1 ? !(val <= acc) : !(val >= acc)) && acc == acc  // NaN wins
                                     : Red == 3 ? val > acc : val < acc;
          acc = take ? val : acc;
          wk = take ? int32_t(k) : wk;
        }
      }
      out[r * L + q] = acc;
      if constexpr (Track) win[r * L + q] = wk;
    }
}

// How one image's work is cut: per group, position chunks x output chunks; the outputs of a chunk
// run inside each block of positions, so a block's columns are reused from cache.
struct OcTasks {
  int64_t qchunks, ochunks, per_group;
  int64_t krows = 0;  // backward: the patch rows of a block that every block of channels passes over
};
// The forward's: one chunk per block of positions, and the outputs split when that gives fewer
// tasks than twice the threads.
inline OcTasks oc_forward_tasks(const Plan& p, int64_t span) {
  OcTasks t{};
  t.qchunks = std::max<int64_t>(1, (p.L + span - 1) / span);
  const int64_t want = 2 * int64_t(get_num_threads()), have = p.G * t.qchunks;
  t.ochunks = have < want ? std::max<int64_t>(1, std::min<int64_t>((p.Og + 3) / 4, (want + have - 1) / have)) : 1;
  t.per_group = t.qchunks * t.ochunks;
  return t;
}

// Tasks [t0, t1) of one image's forward at vector width VB.
template <int VB, int Red, bool Track, class T, class C>
[[gnu::always_inline]] inline void oc_fwd_tasks(const C& comb, const T* cols, const T* w, T* out, int32_t* win,
                                                const Plan& p, const OcTasks& t, int64_t t0, int64_t t1) {
  constexpr int W = VB / int(sizeof(T)), RB = OcShape<VB>::RB, NV = OcShape<VB>::NV;
  const int64_t K = p.K, L = p.L, span = int64_t(NV) * W;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t g = task / t.per_group, rest = task % t.per_group;
    const int64_t qc = rest / t.ochunks, oc = rest % t.ochunks;
    const int64_t q0 = qc * span, q1 = std::min(L, q0 + span);
    const int64_t oa = g * p.Og + p.Og * oc / t.ochunks, ob = g * p.Og + p.Og * (oc + 1) / t.ochunks;
    const T* cg = cols + g * K * L;
    for (int64_t o = oa; o < ob;) {
      const int64_t rows = ob - o >= RB ? RB : 1;
      const T* wr = w + o * K;
      T* orow = out + o * L;
      int32_t* wrow = Track ? win + o * L : nullptr;
      int64_t q = q0;
      if (rows == RB) {
        if (q1 - q == span) {
          oc_fwd_block<VB, RB, NV, Red, Track>(comb, cg + q, wr, orow + q, Track ? wrow + q : nullptr, K, L);
          q += span;
        }
        for (; q + W <= q1; q += W)
          oc_fwd_block<VB, RB, 1, Red, Track>(comb, cg + q, wr, orow + q, Track ? wrow + q : nullptr, K, L);
      } else {
        for (; q + W <= q1; q += W)
          oc_fwd_block<VB, 1, 1, Red, Track>(comb, cg + q, wr, orow + q, Track ? wrow + q : nullptr, K, L);
      }
      if (q < q1) oc_fwd_tail<Red, Track>(comb, cg, wr, orow, wrow, K, L, rows, q, q1);
      o += rows;
    }
  }
}

// dW and dcols of a Sum for RB channels (rows wr of W, gr of gy) and patch row k over positions
// [qa, qb): blocks of NV vectors, then single vectors, then lanes one by one. dW's vector sums stay
// in registers over the whole range, one horizontal sum per (channel, k) at the end (into dwb);
// `first`: the group's first block of channels writes dcols, the others add.
template <int VB, int RB, int NV, bool Dx, bool Dw, class T, class C>
[[gnu::always_inline]] inline void oc_bwd_row(const C& comb, const T* xr, const T* wr, const T* gr, T* dwb, T* dr,
                                              bool first, int64_t K, int64_t L, int64_t k, int64_t qa, int64_t qb) {
  using V = typename OcVec<VB, T>::v;
  constexpr int W = VB / int(sizeof(T));
  V dwacc[RB];
  T wk[RB], tail[RB];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r) {
    dwacc[r] = V{};
    wk[r] = wr[r * K + k];
    tail[r] = T(0);
  }
  int64_t q = qa;
  auto step = [&](auto nv_c) {
    constexpr int nv = decltype(nv_c)::value;
    V xv[nv], dcv[nv];
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v) {
      std::memcpy(&xv[v], xr + q + v * W, sizeof(V));
      dcv[v] = V{};
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < nv; ++v) {
        V g, ddx, ddw;
        std::memcpy(&g, gr + r * L + q + v * W, sizeof(V));
        oc_lanes_d<W>(comb, xv[v], wk[r], ddx, ddw);
        if constexpr (Dx) dcv[v] += g * ddx;
        if constexpr (Dw) dwacc[r] += g * ddw;
      }
    if constexpr (Dx) {
#pragma GCC unroll 16
      for (int v = 0; v < nv; ++v) {
        T* d = dr + q + v * W;
        if (!first) {
          V old;
          std::memcpy(&old, d, sizeof(V));
          dcv[v] += old;
        }
        std::memcpy(d, &dcv[v], sizeof(V));
      }
    }
    q += int64_t(nv) * W;
  };
  for (; q + int64_t(NV) * W <= qb;) step(std::integral_constant<int, NV>{});
  for (; q + W <= qb;) step(std::integral_constant<int, 1>{});
  for (; q < qb; ++q) {
    T s = 0;
    for (int r = 0; r < RB; ++r) {
      T ddx, ddw;
      derivatives(comb, xr[q], wk[r], ddx, ddw);
      if constexpr (Dx) s += gr[r * L + q] * ddx;
      if constexpr (Dw) tail[r] += gr[r * L + q] * ddw;
    }
    if constexpr (Dx) dr[q] = first ? s : dr[q] + s;
  }
  if constexpr (Dw)
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r) dwb[r * K + k] += oc_hsum<VB, T>(dwacc[r]) + tail[r];
}

// Tasks [t0, t1) of one image's Sum backward; a task is a group x a chunk of positions, with all
// the group's channels; dW sums into the buffer of the task's chunk, dwb + chunk * Cout * K.
template <int VB, bool Dx, bool Dw, class T, class C>
[[gnu::always_inline]] inline void oc_bwd_tasks(const C& comb, const T* cols, const T* w, const T* gy, T* dwb,
                                                T* dcols, const Plan& p, const OcTasks& t, int64_t t0, int64_t t1) {
  constexpr int RB = OcShape<VB>::RBB, NV = OcShape<VB>::NVB;
  const int64_t K = p.K, L = p.L;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t g = task / t.per_group, qc = task % t.per_group;
    const int64_t qa = L * qc / t.qchunks, qb = L * (qc + 1) / t.qchunks;
    const T* cg = cols + g * K * L;
    T* dc = Dx ? dcols + g * K * L : nullptr;
    T* db = Dw ? dwb + qc * p.Cout * K : nullptr;
    // Rows of the patch in blocks of t.krows, each passed over by every block of channels.
    const int64_t kb = t.krows > 0 ? t.krows : K;
    for (int64_t ka = 0; ka < K; ka += kb) {
      const int64_t ke = std::min(K, ka + kb);
      for (int64_t o = g * p.Og; o < (g + 1) * p.Og;) {
        const bool full = (g + 1) * p.Og - o >= RB, first = o == g * p.Og;
        const T* wr = w + o * K;
        const T* gr = gy + o * L;
        T* dbo = Dw ? db + o * K : nullptr;
        for (int64_t k = ka; k < ke; ++k) {
          if (full)
            oc_bwd_row<VB, RB, NV, Dx, Dw>(comb, cg + k * L, wr, gr, dbo, Dx ? dc + k * L : nullptr, first, K, L, k, qa, qb);
          else
            oc_bwd_row<VB, 1, NV, Dx, Dw>(comb, cg + k * L, wr, gr, dbo, Dx ? dc + k * L : nullptr, first, K, L, k, qa, qb);
        }
        o += full ? RB : 1;
      }
    }
  }
}

// One function per level, each compiled for its ISA (the user's functor is inlined into it).
// A build with -DMINIGRAD_CPU_LEVELS leaving a level out defines MINIGRAD_NO_<LEVEL> (cpu_isa() then
// never picks it).
#if defined(__x86_64__) && !defined(MINIGRAD_NO_AVX2)
#define MG_OC_AVX2 1
#define MG_OC_LEVEL_AVX2(X) X(avx2, __attribute__((target("avx2,fma"))), 32)
#else
#define MG_OC_LEVEL_AVX2(X)
#endif
#if defined(__x86_64__) && !defined(MINIGRAD_NO_AVX512)
#define MG_OC_AVX512 1
#define MG_OC_LEVEL_AVX512(X) X(avx512, __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), 64)
#else
#define MG_OC_LEVEL_AVX512(X)
#endif
#define MG_OC_LEVELS(X) X(generic, , 16) MG_OC_LEVEL_AVX2(X) MG_OC_LEVEL_AVX512(X)
#define MG_OC_DEFINE(name, attr, VB)                                                                              \
  template <int Red, bool Track, class T, class C>                                                               \
  attr void oc_fwd_##name(const C& comb, const T* cols, const T* w, T* out, int32_t* win, const Plan& p,          \
                          const OcTasks& t, int64_t t0, int64_t t1) {                                            \
    oc_fwd_tasks<VB, Red, Track>(comb, cols, w, out, win, p, t, t0, t1);                                         \
  }                                                                                                              \
  template <bool Dx, bool Dw, class T, class C>                                                                  \
  attr void oc_bwd_##name(const C& comb, const T* cols, const T* w, const T* gy, T* dwb, T* dcols, const Plan& p, \
                          const OcTasks& t, int64_t t0, int64_t t1) {                                            \
    oc_bwd_tasks<VB, Dx, Dw>(comb, cols, w, gy, dwb, dcols, p, t, t0, t1);                                       \
  }
MG_OC_LEVELS(MG_OC_DEFINE)
#undef MG_OC_DEFINE

// The positions of one block at the running level (the span the tasks are cut in).
template <class T>
inline int64_t oc_span(CpuIsa isa, bool backward) {
  return isa == CpuIsa::Avx512 ? OcShape<64>::span<T>(backward)
         : isa == CpuIsa::Avx2 ? OcShape<32>::span<T>(backward)
                               : OcShape<16>::span<T>(backward);
}

// Forward of one image with a built-in reduction: out (Cout, L); win (Cout, L) with Track. Max and
// Min take their one-compare form when no value can be NaN (the same results, since the NaN checks
// then never fire): every column and weight finite, and a combine declaring no_nan_from_finite.
template <class T, class C, int Red, bool Track>
void fused_forward_red(const C& comb, const T* cols, const T* w, T* out, int32_t* win, const Plan& p) {
  const CpuIsa isa = cpu_isa();
  const OcTasks t = oc_forward_tasks(p, oc_span<T>(isa, false));
  parallel_for(0, p.G * t.per_group, 1, [&](int64_t t0, int64_t t1) {
#if defined(MG_OC_AVX512)
    if (isa == CpuIsa::Avx512) return oc_fwd_avx512<Red, Track>(comb, cols, w, out, win, p, t, t0, t1);
#endif
#if defined(MG_OC_AVX2)
    if (isa == CpuIsa::Avx2) return oc_fwd_avx2<Red, Track>(comb, cols, w, out, win, p, t, t0, t1);
#endif
    oc_fwd_generic<Red, Track>(comb, cols, w, out, win, p, t, t0, t1);
  });
}
template <class T, class C, class R, bool Track = false>
void fused_forward(const C& comb, const T* cols, const T* w, T* out, int32_t* win, const Plan& p) {
  constexpr int Red = oc_red<R>;
  if constexpr (Red != 0 && oc_no_nan_from_finite<C>) {
    if (oc_all_finite(cols, p.G * p.K * p.L) && oc_all_finite(w, p.Cout * p.K))
      return fused_forward_red<T, C, Red + 2, Track>(comb, cols, w, out, win, p);
  }
  fused_forward_red<T, C, Red, Track>(comb, cols, w, out, win, p);
}

// Sum backward of one image: dw (Cout, K) accumulated, dcols (G*K, L) written, either may be null.
// Fixed chunks of tasks each sum dW into their own buffer, added in chunk order: the result does not
// depend on which thread ran what.
template <class T, class C, bool Dx, bool Dw>
void fused_backward_sum(const C& comb, const T* cols, const T* w, const T* gy, T* dw, T* dcols, const Plan& p) {
  const CpuIsa isa = cpu_isa();
  // Chunks of positions (equal shares of L, at most one per block): enough tasks for the threads
  // with the groups (a chunk's dW sums go to its own buffer; tasks of one chunk write different
  // groups' rows).
  OcTasks t{};
  const int64_t span = oc_span<T>(isa, true), blocks = std::max<int64_t>(1, (p.L + span - 1) / span);
  // (deterministic mode: a fixed number of chunks, so dW's sums do not depend on the threads)
  const int64_t want = sum_pieces(get_num_threads(), long(blocks * p.G));
  t.qchunks = std::min<int64_t>(blocks, (want + p.G - 1) / p.G);
  t.ochunks = 1;
  t.per_group = t.qchunks;
  // Patch rows per block: their columns and dcols over a chunk within 128 KiB, so they stay in
  // cache while each block of channels passes over them (every (channel, k) still sums its chunk
  // once, so the results are bitwise those of one pass over all rows). One pass over all K rows per
  // block of channels streamed the chunk's columns from memory Og / 8 times: L1's backward kernel
  // at 2 threads, 64->64 3x3 on 32x32, one image, 3.0-3.5 -> 2.0-2.4 ms at AVX-512 (Zen 5).
  const int64_t len = (p.L + t.qchunks - 1) / t.qchunks;
  t.krows = std::max<int64_t>(1, (int64_t(128) << 10) / (2 * len * int64_t(sizeof(T))));
  const int64_t tasks = p.G * t.qchunks;
  std::vector<T> dwb(Dw ? size_t(t.qchunks * p.Cout * p.K) : 0, T(0));
  parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
#if defined(MG_OC_AVX512)
    if (isa == CpuIsa::Avx512) return oc_bwd_avx512<Dx, Dw>(comb, cols, w, gy, dwb.data(), dcols, p, t, t0, t1);
#endif
#if defined(MG_OC_AVX2)
    if (isa == CpuIsa::Avx2) return oc_bwd_avx2<Dx, Dw>(comb, cols, w, gy, dwb.data(), dcols, p, t, t0, t1);
#endif
    oc_bwd_generic<Dx, Dw>(comb, cols, w, gy, dwb.data(), dcols, p, t, t0, t1);
  });
  if constexpr (Dw)  // the chunks' sums in chunk order: the result does not depend on the threads
    for (int64_t c = 0; c < t.qchunks; ++c)
      for (int64_t i = 0; i < p.Cout * p.K; ++i) dw[i] += dwb[size_t(c * p.Cout * p.K + i)];
}
#endif  // register-blocked kernels

// Max / Min over k of combine(cols[k, q], w[k]) for every position q of one output channel, into
// best (L). With Track, also the winning k into win (L). Forward and backward share this, so the
// gradient goes exactly to the k the forward chose (first winner on ties; the first NaN wins, as in max_pool2d).
template <bool Track, class T, class C>
void extreme_over_k(const C& comb, bool is_max, const T* cg, const T* wr, int64_t K, int64_t L, T* best,
                    int32_t* win) {
  const T id = is_max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
  for (int64_t q = 0; q < L; ++q) best[q] = id;
  if constexpr (Track)
    for (int64_t q = 0; q < L; ++q) win[q] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T wk = wr[k];
    const T* cr = cg + k * L;
    for (int64_t q = 0; q < L; ++q) {
      const T v = comb(cr[q], wk);
      const bool take = (is_max ? !(v <= best[q]) : !(v >= best[q])) && best[q] == best[q];  // NaN wins
      best[q] = take ? v : best[q];
      if constexpr (Track) win[q] = take ? int32_t(k) : win[q];
    }
  }
}

// Forward for one image: cols (G*K, L), w (Cout, K), out (Cout, L).
template <class T, class C, class R>
void forward_image(const C& comb, [[maybe_unused]] const R& red, const T* cols, const T* w, T* out, const Plan& p) {
#if defined(MG_OC_BLOCKED)
  if constexpr (builtin_reduce<R>) return fused_forward<T, C, R>(comb, cols, w, out, nullptr, p);
#endif
  const int64_t K = p.K, L = p.L;
  parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
    for (int64_t o = o0_; o < o1_; ++o) {
      const T* cg = cols + (o / p.Og) * K * L;
      const T* wr = w + o * K;
      T* acc = out + o * L;
      if constexpr (std::is_same_v<R, reduce::Max> || std::is_same_v<R, reduce::Min>) {
        extreme_over_k<false>(comb, std::is_same_v<R, reduce::Max>, cg, wr, K, L, acc, nullptr);
      } else {
        const T id = std::is_same_v<R, reduce::Sum> ? T(0) : identity_of<T, R>();
        for (int64_t q = 0; q < L; ++q) acc[q] = id;
        for (int64_t k = 0; k < K; ++k) {
          const T wk = wr[k];
          const T* cr = cg + k * L;
          if constexpr (std::is_same_v<R, reduce::Sum>) {
            for (int64_t q = 0; q < L; ++q) acc[q] += comb(cr[q], wk);
          } else {
            for (int64_t q = 0; q < L; ++q) acc[q] = red(acc[q], comb(cr[q], wk));
          }
        }
      }
    }
  });
}

// Backward of a user reduction for one image. The gradient of r = v_0 (+) ... (+) v_{K-1} with
// respect to v_k is d/dt [ (prefix_{k-1} (+) t) (+) suffix_{k+1} ] at t = v_k, which needs only
// associativity: prefixes are stored for a chunk of positions, suffixes run backwards. Blocks of
// chunks of positions run in parallel, so dcols needs no atomics; each block keeps its own dw sums,
// added up in block order at the end.
template <class T, class C, class R>
void generic_backward_image(const C& comb, const R& red, const T* cols, const T* w, const T* gy, T* dw, T* dcols,
                            const Plan& p) {
  const int64_t K = p.K, L = p.L, rows = p.G * K;
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  const T id = identity_of<T, R>();
  if (dcols)
    for (int64_t i = 0; i < rows * L; ++i) dcols[i] = T(0);
  const bool par = p.Cout * K * L >= kParallelGrain;
  const int64_t blocks = par || are_deterministic_algorithms_enabled() ? sum_pieces(get_num_threads(), long(chunks)) : 1;
  std::vector<T> dw_blocks(dw ? size_t(blocks * p.Cout * K) : 0, T(0));
  parallel_chunks(blocks, [&](int64_t blk, int) {
    T* dw_local = dw ? dw_blocks.data() + blk * p.Cout * K : nullptr;
    std::vector<T> prefix(size_t(K * kChunk)), acc(kChunk), suffix(kChunk);
    for (int64_t c = chunks * blk / blocks; c < chunks * (blk + 1) / blocks; ++c) {
      const int64_t q0 = c * kChunk, n = std::min(kChunk, L - q0);
      for (int64_t o = 0; o < p.Cout; ++o) {
        const int64_t grp = o / p.Og;
        const T* cg = cols + grp * K * L + q0;
        const T* wr = w + o * K;
        const T* g = gy + o * L + q0;
        for (int64_t q = 0; q < n; ++q) acc[q] = id;
        for (int64_t k = 0; k < K; ++k)
          for (int64_t q = 0; q < n; ++q) {
            prefix[k * kChunk + q] = acc[q];
            acc[q] = red(acc[q], comb(cg[k * L + q], wr[k]));
          }
        for (int64_t q = 0; q < n; ++q) suffix[q] = id;
        for (int64_t k = K - 1; k >= 0; --k) {
          const T wk = wr[k];
          T sdw = 0;
          for (int64_t q = 0; q < n; ++q) {
            const T xv = cg[k * L + q], v = comb(xv, wk);
            const Dual2<T> r = red(red(Dual2<T>{prefix[k * kChunk + q], T(0), T(0)}, Dual2<T>{v, T(1), T(0)}),
                                   Dual2<T>{suffix[q], T(0), T(0)});
            const T gq = g[q] * r.dx;
            T ddx, ddw;
            derivatives(comb, xv, wk, ddx, ddw);
            if (dcols) dcols[(grp * K + k) * L + q0 + q] += gq * ddx;
            sdw += gq * ddw;
            suffix[q] = red(v, suffix[q]);
          }
          if (dw) dw_local[o * K + k] += sdw;
        }
      }
    }
  });
  // the blocks' sums in block order: the result does not depend on which thread ran which block
  if (dw)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t i = 0; i < p.Cout * K; ++i) dw[i] += dw_blocks[size_t(b * p.Cout * K + i)];
}

// Backward for one image. gy (Cout, L); dw (Cout, K) accumulated; dcols (G*K, L) written when
// not null; win (Cout, L) scratch for Max/Min, where the gradient goes to the winning k.
template <class T, class C, class R>
void backward_image(const C& comb, [[maybe_unused]] const R& red, const T* cols, const T* w, const T* gy, T* dw, T* dcols,
                    int32_t* win, const Plan& p) {
  const int64_t K = p.K, L = p.L, rows = p.G * K;
  if constexpr (!builtin_reduce<R>) {
    generic_backward_image<T>(comb, red, cols, w, gy, dw, dcols, p);
  } else if constexpr (std::is_same_v<R, reduce::Sum>) {
#if defined(MG_OC_BLOCKED)
    if (dw && dcols) return fused_backward_sum<T, C, true, true>(comb, cols, w, gy, dw, dcols, p);
    if (dw) return fused_backward_sum<T, C, false, true>(comb, cols, w, gy, dw, nullptr, p);
    if (dcols) return fused_backward_sum<T, C, true, false>(comb, cols, w, gy, nullptr, dcols, p);
    return;
#endif
    if (dw) {
      parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
        for (int64_t o = o0_; o < o1_; ++o) {
          const T* cg = cols + (o / p.Og) * K * L;
          for (int64_t k = 0; k < K; ++k) {
            const T wk = w[o * K + k];
            const T* cr = cg + k * L;
            const T* g = gy + o * L;
            T s = 0;
#pragma omp simd reduction(+ : s)  // lets the sum be vectorised (reassociated) in this loop only
            for (int64_t q = 0; q < L; ++q) {
              T ddx, ddw;
              derivatives(comb, cr[q], wk, ddx, ddw);
              s += g[q] * ddw;
            }
            dw[o * K + k] += s;
          }
        }
      });
    }
    if (dcols) {
      parallel_for(0, rows, grain_for(p.Og * L), [&](int64_t r0_, int64_t r1_) {
        for (int64_t r = r0_; r < r1_; ++r) {  // each column row collects from its group's outputs
          const int64_t grp = r / K, k = r % K;
          const T* cr = cols + r * L;
          T* d = dcols + r * L;
          for (int64_t q = 0; q < L; ++q) d[q] = T(0);
          for (int64_t o = grp * p.Og; o < (grp + 1) * p.Og; ++o) {
            const T wk = w[o * K + k];
            const T* g = gy + o * L;
#pragma omp simd
            for (int64_t q = 0; q < L; ++q) {
              T ddx, ddw;
              derivatives(comb, cr[q], wk, ddx, ddw);
              d[q] += g[q] * ddx;
            }
          }
        }
      });
    }
  } else {
    // Max / Min: recompute which k won each (o, q), exactly as the forward did, then route the
    // gradient there.
    auto route_dw = [&](int64_t o, const int32_t* wi) {  // dW of channel o from its winners wi (L)
      const T* cg = cols + (o / p.Og) * K * L;
      const T* g = gy + o * L;
      for (int64_t q = 0; q < L; ++q) {
        const int64_t k = wi[q];
        T ddx, ddw;
        derivatives(comb, cg[k * L + q], w[o * K + k], ddx, ddw);
        dw[o * K + k] += g[q] * ddw;
      }
    };
#if defined(MG_OC_BLOCKED)
    {
      std::vector<T> best(size_t(p.Cout * L));
      fused_forward<T, C, R, true>(comb, cols, w, best.data(), win, p);
    }
    if (dw)
      parallel_for(0, p.Cout, grain_for(L), [&](int64_t o0_, int64_t o1_) {
        for (int64_t o = o0_; o < o1_; ++o) route_dw(o, win + o * L);
      });
#else
    parallel_for(0, p.Cout, grain_for(K * L), [&](int64_t o0_, int64_t o1_) {
      std::vector<T> best(static_cast<size_t>(L));
      for (int64_t o = o0_; o < o1_; ++o) {
        extreme_over_k<true>(comb, std::is_same_v<R, reduce::Max>, cols + (o / p.Og) * K * L, w + o * K, K, L,
                             best.data(), win + o * L);
        if (dw) route_dw(o, win + o * L);
      }
    });
#endif
    if (dcols) {
      for (int64_t i = 0; i < rows * L; ++i) dcols[i] = T(0);
      parallel_for(0, L, grain_for(p.Cout), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q)  // positions are independent
          for (int64_t o = 0; o < p.Cout; ++o) {
            const int64_t k = win[o * L + q], r = (o / p.Og) * K + k;
            T ddx, ddw;
            derivatives(comb, cols[r * L + q], w[o * K + k], ddx, ddw);
            dcols[r * L + q] += gy[o * L + q] * ddx;
          }
      });
    }
  }
}


}  // namespace minigrad::open_conv_detail
