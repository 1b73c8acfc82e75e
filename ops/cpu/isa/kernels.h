// minigrad CPU backend: the kernels compiled once per vector ISA level (ops/cpu/isa/*.cpp, each
// with its own compiler flags) and the table that picks one level's set at run time. Only plain
// function pointers cross between the levels, so no inline function or template compiled for one
// level can stand in for another's (the isa_symbols test checks the object files for that).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../../../core/cpu_isa.h"
#include "../../../core/parallel.h"  // detail::parallel_run, get_num_threads: compiled once, outside the levels
#include "../../conv_geometry.h"
#include "../../optim_step.h"

namespace minigrad::cpu {

// The elementwise arithmetic of the per-level kernels, and their transcendental functions.
enum class Arith : int { Add, Sub, Mul, Div };
enum class Transcendental : int { Exp, Log, Tanh, Sigmoid, Gelu, Pow };

// One dtype's kernels; every buffer contiguous.
template <class T>
struct TypedKernels {
  // Stride-1 direct convolution (no columns) of x (N, C, H, W) with w (Cout, C/G, kh, kw):
  // y (N, Cout, Ho, Wo) = conv; dx (N, C, H, W) = its data gradient from gy; dw += its weight gradient.
  void (*conv_forward)(T* y, const T* x, const T* w, int64_t N, int64_t G, int64_t Cout, const Conv2dGeometry& g);
  void (*conv_data)(T* dx, const T* gy, const T* w, int64_t N, int64_t G, int64_t Cout, const Conv2dGeometry& g);
  void (*conv_weight)(T* dw, const T* gy, const T* x, int64_t N, int64_t G, int64_t Cout, const Conv2dGeometry& g);
  // im2col of x (T_, C, H, W) into cols (C*kh*kw rows, ld apart; image t at column t*Ho*Wo) and
  // col2im, its adjoint (x overwritten).
  void (*im2col)(T* cols, int64_t ld, const T* x, int64_t images, const Conv2dGeometry& g);
  void (*col2im)(T* x, const T* cols, int64_t ld, int64_t images, const Conv2dGeometry& g);
  // relu of x into y with its derivative's bits, over mask bytes [b0, b1) of n elements (bit i%8
  // of mask[i/8] = y[i] > 0), and its backward gx = gy where the bit is set.
  void (*relu_mask)(const T* x, T* y, uint8_t* mask, int64_t b0, int64_t b1, int64_t n);
  void (*relu_mask_backward)(const T* gy, T* gx, const uint8_t* mask, int64_t b0, int64_t b1, int64_t n);

  // ---- memory-bound kernels (pointwise.inc) over n contiguous elements, called by the baseline
  // code's loops on one piece each. Sums run in T vectors over blocks of 1024 elements, each
  // block's lanes added into a double.
  double (*sum)(const T* x, int64_t n);                      // sum of x
  double (*sum_sq_dev)(const T* x, int64_t n, double mean);  // sum of (x - mean)^2
  void (*sum_and_dot)(const T* g, const T* x, int64_t n, double* sum_g, double* sum_gx);
  // o = a*x + d and o = a*x + b*x2 + d (o may be x).
  void (*affine)(T* o, const T* x, T a, T d, int64_t n);
  void (*affine2)(T* o, const T* x, T a, const T* x2, T b, T d, int64_t n);
  // o = a op b (Add, Sub: a +- alpha*b); a and b step 1 element (sa, sb = 1) or repeat their first
  // (sa, sb = 0: a broadcast scalar).
  void (*arith)(Arith op, T* o, const T* a, int64_t sa, const T* b, int64_t sb, T alpha, int64_t n);
  // The optimizers' fused updates (the arithmetic of the CUDA kernels in ops/cuda/optim.cu); buf
  // may be null (no momentum).
  void (*sgd)(T* p, const T* g, T* buf, int64_t n, const SgdStep& s);
  void (*adam)(T* p, const T* g, T* m, T* v, int64_t n, const AdamStep& s);
  // y = f(x) (p: Pow's exponent; y may be x), and the backward of gelu and x^e: with SLEEF's vector
  // functions (1.0 ulp) in builds that have it (MINIGRAD_SLEEF), libm's per lane otherwise.
  void (*transcendental)(Transcendental f, T* y, const T* x, T p, int64_t n);
  void (*gelu_backward)(T* gx, const T* gy, const T* x, int64_t n);
  void (*pow_backward)(T* gx, const T* gy, const T* x, T e, int64_t n);
  // softmax (log: log_softmax) of one contiguous row of n, and its backward from the output y.
  void (*softmax_row)(T* y, const T* x, int64_t n, bool log);
  void (*softmax_row_backward)(T* gx, const T* gy, const T* y, int64_t n, bool log);

  // ---- 2x2 stride-2 max pooling of one plane, every window inside it (pool.inc): the values and
  // each window's winning tap (0-3, row-major in the window; NaN wins, then the first of equal
  // values), and the backward, which writes all H x W elements of gx.
  void (*max_pool_2x2)(const T* src, T* out, uint8_t* taps, int64_t W, int64_t Ho, int64_t Wo);
  void (*max_pool_2x2_backward)(T* gx, const T* gy, const uint8_t* taps, int64_t H, int64_t W, int64_t Ho,
                                int64_t Wo);
};

struct IsaKernels {
  CpuIsa isa;
  int vector_bytes;  // bytes of one vector register
  int registers;     // vector registers the register blocks are sized for
  TypedKernels<float> f32;
  TypedKernels<double> f64;
  // GFLOP/s of independent float multiply-adds (FMA where the level has it) on `threads` threads:
  // the peak the conv kernels are measured against.
  double (*fma_peak)(int threads);
  // Writes (snprintf-style, at most cap bytes) how the direct kernels block a conv with Og outputs
  // and Cg inputs per group, for the forward, data-gradient and weight-gradient passes.
  void (*describe_direct)(char* out, size_t cap, int64_t Og, int64_t Cg, const Conv2dGeometry& g, bool f64);
};

const IsaKernels& isa_kernels_generic();
const IsaKernels& isa_kernels_avx2();    // only in builds with MINIGRAD_ISA_AVX2
const IsaKernels& isa_kernels_avx512();  // only in builds with MINIGRAD_ISA_AVX512
// The set for `isa` (which must be compiled in), and the set cpu_isa() runs now.
const IsaKernels& isa_kernels(CpuIsa isa);
inline const IsaKernels& isa_kernels() { return isa_kernels(cpu_isa()); }
// The running level's kernels for dtype T (float or double). Look them up before a parallel
// region: the first lookup reads MINIGRAD_CPU_ISA and may throw.
template <class T>
const TypedKernels<T>& typed_kernels() {
  if constexpr (sizeof(T) == 8) return isa_kernels().f64;
  else return isa_kernels().f32;
}

// Scratch memory for the per-ISA kernels, allocated by baseline code (64-byte aligned; throws
// minigrad::Error when it cannot). Kernels allocate before their parallel regions.
void* scratch_alloc(size_t bytes, bool zero);
void scratch_free(void* p) noexcept;

}  // namespace minigrad::cpu
