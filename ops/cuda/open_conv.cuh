// minigrad: the open convolution's fused CUDA kernels, templates over the combine and reduce
// functors. The library compiles them for the built-in combines; a program with its own combine
// compiles them in one of its .cu files:
//
//   #include <minigrad/minigrad.h>
//   #include <minigrad/ops/cuda/open_conv.cuh>
//   struct Huber { template <class T> MG_HOST_DEVICE T operator()(T x, T w) const { ... } };
//   MG_CUDA_OPEN_CONV(Huber)   // Sum, Max and Min, float and double
//
// The functor is copied into the kernels by value, so it must be trivially copyable, and its
// operator() (and dx / dw) must be MG_HOST_DEVICE. Same semantics as the CPU kernels: per output
// (o, q), combine over the group's K patch values, then sum, or max / min with the gradient going
// to the first winner (the first NaN wins); the functor's own dx / dw, else dual numbers.
#pragma once
#include <limits>
#include <type_traits>
#include <typeindex>

#include "../open_conv.h"
#include "loops.cuh"

namespace minigrad::cuda::open_conv {

using open_conv_detail::Plan;

template <class R>
inline constexpr bool kExtreme = std::is_same_v<R, reduce::Max> || std::is_same_v<R, reduce::Min>;

// The winner over k of output (o, q) (Max / Min), its value in *best.
template <class T, class C, bool IsMax>
__device__ int64_t winner(const C& comb, const T* c, const T* wr, int64_t K, int64_t L, T* best) {
  T b = IsMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
  int64_t win = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T v = comb(c[k * L], wr[k]);
    const bool take = (IsMax ? !(v <= b) : !(v >= b)) && b == b;  // the first NaN wins, as in max_pool2d
    b = take ? v : b;
    win = take ? k : win;
  }
  *best = b;
  return win;
}

// One thread per output (o, q): out (Cout, L) = reduce_k combine(cols[grp(o) K + k, q], w[o, k]).
template <class T, class C, class R>
__global__ void forward_kernel(int64_t n, C comb, const T* cols, const T* w, T* out, int64_t Og, int64_t K,
                               int64_t L) {
  MG_GRID_LOOP(i, n) {
    const int64_t o = i / L, q = i % L;
    const T* c = cols + (o / Og) * K * L + q;
    const T* wr = w + o * K;
    if constexpr (kExtreme<R>) {
      T best;
      winner<T, C, std::is_same_v<R, reduce::Max>>(comb, c, wr, K, L, &best);
      out[i] = best;
    } else {
      T acc = T(0);
      for (int64_t k = 0; k < K; ++k) acc += comb(c[k * L], wr[k]);
      out[i] = acc;
    }
  }
}

template <class T, class C, class R>
__global__ void winner_kernel(int64_t n, C comb, const T* cols, const T* w, int64_t* win, int64_t Og, int64_t K,
                              int64_t L) {
  MG_GRID_LOOP(i, n) {
    const int64_t o = i / L, q = i % L;
    T best;
    win[i] = winner<T, C, std::is_same_v<R, reduce::Max>>(comb, cols + (o / Og) * K * L + q, w + o * K, K, L, &best);
  }
}

// Sum, dw: one block per (o, k), its threads over q, then a tree sum (no atomics).
template <class T, class C>
__global__ void dw_sum_kernel(C comb, const T* cols, const T* w, const T* gy, T* dw, int64_t Og, int64_t K,
                              int64_t L) {
  __shared__ double part[kThreads];
  const int64_t ok = blockIdx.x, o = ok / K, k = ok % K;
  const T* c = cols + ((o / Og) * K + k) * L;
  const T wk = w[ok];
  double s = 0;
  for (int64_t q = threadIdx.x; q < L; q += kThreads) {
    T ddx, ddw;
    open_conv_detail::derivatives(comb, c[q], wk, ddx, ddw);
    s += double(gy[o * L + q] * ddw);
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int h = kThreads / 2; h > 0; h >>= 1) {
    if (int(threadIdx.x) < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) dw[ok] += T(part[0]);
}

// Max / Min, dw: one thread per output, into its winner's weight (atomics: outputs share weights).
template <class T, class C>
__global__ void dw_extreme_kernel(int64_t n, C comb, const T* cols, const T* w, const T* gy, const int64_t* win,
                                  T* dw, int64_t Og, int64_t K, int64_t L) {
  MG_GRID_LOOP(i, n) {
    const int64_t o = i / L, q = i % L, k = win[i];
    T ddx, ddw;
    open_conv_detail::derivatives(comb, cols[((o / Og) * K + k) * L + q], w[o * K + k], ddx, ddw);
    atomicAdd(dw + o * K + k, gy[i] * ddw);
  }
}

// dcols: one thread per column entry (r, q), gathering from its group's outputs (no atomics).
template <class T, class C, class R>
__global__ void dcols_kernel(int64_t n, C comb, const T* cols, const T* w, const T* gy, const int64_t* win, T* dcols,
                             int64_t Og, int64_t K, int64_t L) {
  MG_GRID_LOOP(i, n) {
    const int64_t r = i / L, q = i % L, grp = r / K, k = r % K;
    const T x = cols[i];
    T d = T(0);
    for (int64_t o = grp * Og; o < (grp + 1) * Og; ++o) {
      if constexpr (kExtreme<R>)
        if (win[o * L + q] != k) continue;
      T ddx, ddw;
      open_conv_detail::derivatives(comb, x, w[o * K + k], ddx, ddw);
      d += gy[o * L + q] * ddx;
    }
    dcols[i] = d;
  }
}

template <class C, class R, class T>
void forward(const void* comb, const Tensor& cols, const Tensor& w, const Tensor& out, const Plan& p) {
  launch("open_conv2d", cols.device(), p.Cout * p.L, forward_kernel<T, C, R>, *static_cast<const C*>(comb),
         ptr<T>(cols), ptr<T>(w), ptr<T>(out), p.Og, p.K, p.L);
}

template <class C, class R, class T>
void backward(const void* comb_p, const Tensor& cols, const Tensor& w, const Tensor& gy, const Tensor& dw,
              const Tensor& dcols, const Plan& p) {
  const C& comb = *static_cast<const C*>(comb_p);
  const Device d = cols.device();
  Tensor win;
  if constexpr (kExtreme<R>) {
    win = empty({p.Cout * p.L}, TensorOptions(kInt64).device(d));
    launch("open_conv2d backward", d, p.Cout * p.L, winner_kernel<T, C, R>, comb, ptr<T>(cols), ptr<T>(w),
           ptr<int64_t>(win), p.Og, p.K, p.L);
  }
  const int64_t* wp = win.defined() ? ptr<int64_t>(win) : nullptr;
  if (dw.defined()) {
    if constexpr (kExtreme<R>) {
      launch("open_conv2d backward (weight)", d, p.Cout * p.L, dw_extreme_kernel<T, C>, comb, ptr<T>(cols),
             ptr<T>(w), ptr<T>(gy), wp, ptr<T>(dw), p.Og, p.K, p.L);
    } else if (p.Cout * p.K > 0) {
      set_device(d);
      dw_sum_kernel<T, C><<<unsigned(p.Cout * p.K), kThreads, 0, stream(d)>>>(comb, ptr<T>(cols), ptr<T>(w),
                                                                            ptr<T>(gy), ptr<T>(dw), p.Og, p.K, p.L);
      MG_CUDA_LAUNCH_CHECK("open_conv2d backward (weight)");
    }
  }
  if (dcols.defined())
    launch("open_conv2d backward (columns)", d, p.G * p.K * p.L, dcols_kernel<T, C, R>, comb, ptr<T>(cols),
           ptr<T>(w), ptr<T>(gy), wp, ptr<T>(dcols), p.Og, p.K, p.L);
}

// Registers combine C with the built-in reductions, for float and double.
template <class C>
void register_combine() {
  static_assert(std::is_trivially_copyable_v<C>, "open_conv2d on CUDA: the combine functor is copied into the "
                                                 "kernels, so it must be trivially copyable");
  auto one = [](auto red, auto tag) {
    using R = decltype(red);
    using T = typename decltype(tag)::type;
    open_conv_detail::register_cuda_open_conv(typeid(C), typeid(R), dtype_of<T>(), {&forward<C, R, T>, &backward<C, R, T>});
  };
  one(reduce::Sum{}, type_tag<float>{});
  one(reduce::Max{}, type_tag<float>{});
  one(reduce::Min{}, type_tag<float>{});
  one(reduce::Sum{}, type_tag<double>{});
  one(reduce::Max{}, type_tag<double>{});
  one(reduce::Min{}, type_tag<double>{});
}

}  // namespace minigrad::cuda::open_conv

#define MG_CUDA_OPEN_CONV_CAT2(a, b) a##b
#define MG_CUDA_OPEN_CONV_CAT(a, b) MG_CUDA_OPEN_CONV_CAT2(a, b)
// Registers the fused CUDA kernels of a combine functor (in a .cu file, at namespace scope).
#define MG_CUDA_OPEN_CONV(Combine)                                                                    \
  static const bool MG_CUDA_OPEN_CONV_CAT(mg_cuda_open_conv_registered_, __LINE__) =                  \
      (::minigrad::cuda::open_conv::register_combine<Combine>(), true)
