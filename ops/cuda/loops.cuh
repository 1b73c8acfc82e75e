// minigrad CUDA backend: strided indexing and grid-stride launches shared by the kernels.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "../../core/cuda_check.h"
#include "../../core/cuda_context.h"
#include "../../core/tensor.h"

namespace minigrad::cuda {

inline constexpr int kMaxDims = 12;
inline constexpr int kThreads = 256;

// Linear index -> element offsets of N operands of one shape (strides in elements).
template <int N>
struct Indexer {
  int nd = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
  __device__ void offsets(int64_t i, int64_t* off) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t q = i / sizes[d], r = i - q * sizes[d];
      i = q;
      for (int k = 0; k < N; ++k) off[k] += r * strides[k][d];
    }
  }
};

// Drops size-1 dims and merges dims that are contiguous in every operand.
template <int N>
Indexer<N> make_indexer(const char* op, const Shape& shape, const std::array<Shape, N>& strides) {
  Indexer<N> ix;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (ix.nd > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && ix.strides[k][ix.nd - 1] == strides[k][d] * shape[d];
      if (merge) {
        ix.sizes[ix.nd - 1] *= shape[d];
        for (int k = 0; k < N; ++k) ix.strides[k][ix.nd - 1] = strides[k][d];
        continue;
      }
    }
    MG_CHECK(ix.nd < kMaxDims, op, ": CUDA kernels take at most ", kMaxDims,
             " non-mergeable dims, got shape ", shape);
    ix.sizes[ix.nd] = shape[d];
    for (int k = 0; k < N; ++k) ix.strides[k][ix.nd] = strides[k][d];
    ++ix.nd;
  }
  return ix;
}
template <int N>
Indexer<N> make_indexer(const char* op, const Shape& shape, const std::array<const Tensor*, N>& ts) {
  std::array<Shape, N> st;
  for (int k = 0; k < N; ++k) st[k] = ts[k]->strides();
  return make_indexer<N>(op, shape, st);
}

inline unsigned grid_for(int64_t n) {
  return unsigned(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535 * 4));
}

#define MG_GRID_LOOP(i, n)                                                                   \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                \
       i += int64_t(gridDim.x) * blockDim.x)

// Launches kernel<<<grid, kThreads>>> on d's stream over n items and checks the launch.
template <class Kernel, class... Args>
void launch(const char* name, Device d, int64_t n, Kernel kernel, Args... args) {
  if (n <= 0) return;
  set_device(d);
  kernel<<<grid_for(n), kThreads, 0, stream(d)>>>(n, args...);
  MG_CUDA_LAUNCH_CHECK(name);
}

template <class T>
T* ptr(const Tensor& t) { return t.data_ptr<T>(); }

// *p += v for float, double and int64 from many threads at once.
template <class T>
__device__ void atomic_add(T* p, T v) {
  if constexpr (std::is_same_v<T, int64_t>)
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  else
    atomicAdd(p, v);
}


}  // namespace minigrad::cuda
