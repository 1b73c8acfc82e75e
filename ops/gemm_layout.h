// minigrad: how a GEMM operand's last two dims (rows r, cols c; strides rs, cs) can be handed to a
// BLAS: as a row-major matrix or as a transposed one, with its leading dimension, without a copy.
// Shared by the CPU (cblas, row-major) and CUDA (cuBLAS, through Cᵀ = Bᵀ·Aᵀ) backends.
#pragma once
#include <algorithm>
#include <cstdint>

namespace minigrad {

struct MatLayout {
  bool trans = false;
  int64_t ld = 0;
  bool ok = false;  // false: neither layout fits (e.g. both strides > 1); copy the operand first
};

inline MatLayout mat_layout(int64_t r, int64_t c, int64_t rs, int64_t cs) {
  if ((cs == 1 || c == 1) && (rs >= std::max<int64_t>(c, 1) || r == 1))
    return {false, std::max<int64_t>({rs, c, 1}), true};
  if ((rs == 1 || r == 1) && (cs >= std::max<int64_t>(r, 1) || c == 1))
    return {true, std::max<int64_t>({cs, r, 1}), true};
  return {};
}

}  // namespace minigrad
