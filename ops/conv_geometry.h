// minigrad: one convolution's geometry, shared by the op front ends, every backend and the
// per-ISA CPU kernels (which include nothing heavier).
#pragma once
#include <cstdint>

namespace minigrad {

// One conv's geometry. The "image side" is (C, H, W); the kernel slides over it and gives
// Ho x Wo positions. pad_h/pad_w are the top/left padding (the bottom/right padding is implied by
// Ho/Wo, so asymmetric "same" padding needs nothing more).
struct Conv2dGeometry {
  int64_t C = 0, H = 0, W = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, pad_h = 0, pad_w = 0, dh = 1, dw = 1;
  int64_t Ho = 0, Wo = 0;
  int64_t rows() const { return C * kh * kw; }
  int64_t positions() const { return Ho * Wo; }
};

// How a conv is computed: Auto lets the backend choose per shape (see explain_conv), Gemm forces
// unfold + GEMM, Direct the CPU's column-free direct kernels wherever they apply (stride 1, and
// strided convs with dilation 1 as sums of stride-1 convs on phase planes).
enum class ConvAlgorithm { Auto, Gemm, Direct };

}  // namespace minigrad
