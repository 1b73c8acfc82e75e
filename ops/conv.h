// minigrad: unfold/fold (im2col/col2im) and the convolutions built from them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "backend.h"

namespace minigrad {

// A (height, width) pair; one number means both.
struct Pair2 {
  int64_t h = 1, w = 1;
  Pair2() = default;
  Pair2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, so {.stride = 2} works
  Pair2(int64_t a, int64_t b) : h(a), w(b) {}
};

// Conv padding: a number, a (h, w) pair, "same" (stride 1 only) or "valid" (none).
struct Padding2 {
  enum class Mode { Explicit, Same, Valid };
  Mode mode = Mode::Explicit;
  int64_t h = 0, w = 0;
  Padding2() = default;
  Padding2(int64_t v) : h(v), w(v) {}  // NOLINT
  Padding2(int64_t a, int64_t b) : h(a), w(b) {}
  Padding2(Pair2 p) : h(p.h), w(p.w) {}  // NOLINT
  template <size_t N>
  Padding2(const char (&s)[N]) : Padding2(std::string(s)) {}  // NOLINT: "same" or "valid"
  Padding2(const std::string& s);                              // NOLINT
};

struct UnfoldOptions {
  Pair2 kernel_size = 1;
  Pair2 stride = 1;
  Pair2 padding = 0;
  Pair2 dilation = 1;
};

// (N, C, H, W) -> (N, C*kh*kw, L): every kernel-sized patch as a column, as torch's F.unfold.
Tensor unfold(const Tensor& x, const UnfoldOptions& opts);
// (N, C*kh*kw, L) -> (N, C, H, W), summing overlaps: the adjoint of unfold.
Tensor fold(const Tensor& cols, Pair2 output_size, const UnfoldOptions& opts);

struct Conv2dOptions {
  Pair2 stride = 1;
  Padding2 padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
};

// x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout) or undefined.
// Computed as unfold + GEMM over tiles of images whose columns fit conv_workspace_limit(), or, for
// stride-1 convs on the CPU (and strided ones when forced), by direct kernels without columns
// (see ConvAlgorithm); the tape keeps x and weight, never the columns, and backward rebuilds them
// tile by tile.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
              const Conv2dOptions& opts = {});

struct ConvTranspose2dOptions {
  Pair2 stride = 1;
  Pair2 padding = 0;
  Pair2 output_padding = 0;
  Pair2 dilation = 1;
  int64_t groups = 1;
};

// x (N, Cin, H, W), weight (Cin, Cout/groups, kh, kw): conv2d's data gradient as an op.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
                        const ConvTranspose2dOptions& opts = {});

namespace detail {
// Checks a conv's arguments (shapes, channels, groups, stride, dilation, padding, kernel size)
// naming `op` in errors, and returns its geometry. Shared by conv2d and the open convolution.
Conv2dGeometry conv2d_geometry(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias,
                               const Conv2dOptions& o);
}  // namespace detail

// Bytes of im2col workspace a conv may use at once (default 8 MiB). A tile holds as many images as
// fit, at least one; 1x1 stride-1 unpadded convs use none.
void set_conv_workspace_limit(size_t bytes);
size_t conv_workspace_limit();

// How conv2d and conv_transpose2d compute (ConvAlgorithm, in ops/conv_geometry.h). Auto (the
// default) lets the device's backend pick per layer from the shape and, on the CPU, the running ISA
// level; explain_conv() says what it picked and why. Gemm forces unfold + GEMM everywhere; Direct
// asks for the CPU's direct kernels wherever they apply (stride 1). Every choice computes the same
// function and gradients; tests run each.
void set_conv_algorithm(ConvAlgorithm a);
ConvAlgorithm conv_algorithm();

// What conv2d(x, weight, {}, opts) would run on x's device now, and why: the algorithm, the ISA
// level and register blocks of the CPU's direct kernels, or the GEMM path. With the environment
// variable MINIGRAD_CONV_VERBOSE=1 every conv prints this to stderr the first time a shape is seen.
std::string explain_conv(const Tensor& x, const Tensor& weight, const Conv2dOptions& opts = {});

}  // namespace minigrad
