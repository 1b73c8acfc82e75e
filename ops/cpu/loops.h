// minigrad CPU backend: strided loops over N operands of one shape, with dimension coalescing
// and a split of the flattened index range over minigrad's threads.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <tuple>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../../core/tensor.h"
#include "../../core/parallel.h"

namespace minigrad::cpu {

template <size_t N>
struct Geometry {
  std::vector<int64_t> sizes;                   // coalesced, innermost last
  std::vector<std::array<int64_t, N>> strides;  // bytes, per dim per operand
};

// Merges dims that are contiguous in every operand and drops size-1 dims.
template <size_t N>
Geometry<N> coalesce(const Shape& shape, const std::array<const Tensor*, N>& ts) {
  Geometry<N> g;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    std::array<int64_t, N> st;
    for (size_t k = 0; k < N; ++k) st[k] = ts[k]->strides()[d] * int64_t(ts[k]->element_size());
    if (!g.sizes.empty()) {
      bool merge = true;
      for (size_t k = 0; k < N; ++k) merge = merge && g.strides.back()[k] == st[k] * shape[d];
      if (merge) {
        g.sizes.back() *= shape[d];
        g.strides.back() = st;
        continue;
      }
    }
    g.sizes.push_back(shape[d]);
    g.strides.push_back(st);
  }
  if (g.sizes.empty()) {
    g.sizes.push_back(1);
    g.strides.push_back({});
  }
  return g;
}

// Calls f(ptrs, inner_strides_in_bytes, n) on runs along the innermost dim, covering every
// element of `shape` once. All operands must have `shape` (use stride 0 to broadcast).
template <size_t N, class F>
void for_each(const Shape& shape, const std::array<const Tensor*, N>& ts, F&& f,
              bool parallel = true) {
  const int64_t total = numel_of(shape);
  if (total == 0) return;
  Geometry<N> g = coalesce<N>(shape, ts);
  const int64_t nd = int64_t(g.sizes.size());
  const int64_t inner = g.sizes.back();
  const std::array<int64_t, N> inner_st = g.strides.back();
  std::array<char*, N> base;
  for (size_t k = 0; k < N; ++k) base[k] = static_cast<char*>(ts[k]->raw_data());

  auto run = [&](int64_t begin, int64_t end) {
    while (begin < end) {
      int64_t row = begin / inner, col = begin % inner;
      std::array<char*, N> p = base;
      for (int64_t d = nd - 2; d >= 0; --d) {
        int64_t idx = row % g.sizes[d];
        row /= g.sizes[d];
        for (size_t k = 0; k < N; ++k) p[k] += idx * g.strides[d][k];
      }
      for (size_t k = 0; k < N; ++k) p[k] += col * inner_st[k];
      int64_t n = std::min(inner - col, end - begin);
      f(p, inner_st, n);
      begin += n;
    }
  };
  if (!parallel) {
    run(0, total);
    return;
  }
  parallel_for(0, total, kParallelGrain / 2, run);
}

// out = f(in...) elementwise, with a vectorisable path when every operand is contiguous.
template <class Out, class... In, class F>
void map(const Tensor& out, F&& f, const std::same_as<Tensor> auto&... ins) {
  static_assert(sizeof...(In) == sizeof...(ins));
  constexpr size_t N = 1 + sizeof...(In);
  std::array<const Tensor*, N> ts{&out, &ins...};
  for_each<N>(out.sizes(), ts, [&](const std::array<char*, N>& p, const std::array<int64_t, N>& s,
                                   int64_t n) {
    [&]<size_t... I>(std::index_sequence<I...>) {
      constexpr std::array<int64_t, N> sz{int64_t(sizeof(Out)), int64_t(sizeof(In))...};
      if (s == sz) {
        Out* o = reinterpret_cast<Out*>(p[0]);
        std::tuple<const In*...> in{reinterpret_cast<const In*>(p[I + 1])...};
        for (int64_t i = 0; i < n; ++i) o[i] = f(std::get<I>(in)[i]...);
      } else {
        for (int64_t i = 0; i < n; ++i)
          *reinterpret_cast<Out*>(p[0] + i * s[0]) =
              f(*reinterpret_cast<const In*>(p[I + 1] + i * s[I + 1])...);
      }
    }(std::make_index_sequence<sizeof...(In)>{});
  });
}

}  // namespace minigrad::cpu
