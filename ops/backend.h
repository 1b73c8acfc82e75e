// minigrad: the kernels one device provides. Ops do shape checks, broadcasting and autograd
// once, device-independently, then call the backend of their tensors' device. The CPU backend
// lives in ops/cpu/; a CUDA backend registers itself the same way.
#pragma once
#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "conv_geometry.h"
#include "optim_step.h"

namespace minigrad {

// A pooling window's geometry over (planes, H, W): a conv geometry (C unused) plus how windows
// are formed. Adaptive windows are [floor(i*H/Ho), ceil((i+1)*H/Ho)) and ignore kernel/stride.
struct Pool2dGeometry {
  Conv2dGeometry g;
  bool adaptive = false;
  bool count_include_pad = true;  // avg: divide by the window including padding
};

enum class UnaryOp { Neg, Exp, Log, Sqrt, Abs, Pow, Relu, Sigmoid, Tanh, Gelu };
enum class BinaryOp { Add, Sub, Mul, Div, Max, Min };
enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge };
enum class ReduceOp { Sum, Max, Min };

// A backend's choice for one conv shape (conv2d, conv_transpose2d and both gradients take the
// same one): its direct kernels, or unfold + GEMM; and why, in words.
struct ConvChoice {
  bool direct = false;
  std::string reason;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // dst = src elementwise (same shape, any strides; converts dtype).
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;
  // out = op(x) (p is pow's exponent).
  virtual void unary(UnaryOp op, const Tensor& out, const Tensor& x, double p) = 0;
  // gx = gy * op'(x), with y = op(x) available to the ops that prefer it (exp, sqrt, sigmoid and
  // tanh read y; the others read x). relu's backward is relu_mask_backward.
  virtual void unary_backward(UnaryOp op, const Tensor& gx, const Tensor& gy, const Tensor& x,
                              const Tensor& y, double p) = 0;
  // relu that also packs its derivative into bits, so backward keeps n/8 bytes instead of y:
  // y = max(x, 0) and bit i%8 of mask[i/8] = (y[i] > 0); x, y contiguous, mask uint8 (ceil(n/8)).
  virtual void relu_mask(const Tensor& y, const Tensor& mask, const Tensor& x) = 0;
  // gx = gy where mask's bit is set, else 0; gx, gy contiguous.
  virtual void relu_mask_backward(const Tensor& gx, const Tensor& gy, const Tensor& mask) = 0;
  // out = op(a, alpha * b); a and b are already broadcast to out's shape and of out's dtype.
  virtual void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                      double alpha) = 0;
  // out (int64) = a op b; a and b broadcast to out's shape, of one dtype.
  virtual void compare(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) = 0;
  // out has x's rank, with size 1 in the reduced dims.
  virtual void reduce(ReduceOp op, const Tensor& out, const Tensor& x) = 0;
  // values and indices have x's rank, with size 1 in dim.
  virtual void reduce_arg(ReduceOp op, const Tensor& values, const Tensor& indices,
                          const Tensor& x, int64_t dim) = 0;
  // out = x gathered along dim at index (out has index's shape). Throws on an index out of range.
  virtual void gather(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) = 0;
  // out[... index[i] ...] += src[i] along dim (the adjoint of gather).
  virtual void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) = 0;
  // out[b] = alpha * a[b] @ b[b] + beta * out[b]; all 3-D; a, b any strides; out contiguous.
  virtual void gemm(const Tensor& out, const Tensor& a, const Tensor& b, double alpha,
                    double beta) = 0;
  // im2col: x is (T, C, H, W) contiguous; cols is (C*kh*kw, >= T*Ho*Wo) with unit column stride,
  // and image t fills columns [t*Ho*Wo, (t+1)*Ho*Wo).
  virtual void im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) = 0;
  // col2im, the adjoint: x (T, C, H, W) = the sum of cols' entries over every place each came from.
  virtual void col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) = 0;
  // How this device computes a conv of geometry g with Cout outputs in `groups` groups of
  // `dtype`, given what the program asked for; the reason in words only when `explain`. The
  // default: unfold + GEMM.
  virtual ConvChoice choose_conv(const Conv2dGeometry& g, int64_t groups, int64_t Cout, DType dtype,
                                 ConvAlgorithm requested, bool explain);
  // Direct convolution without columns, for the convs that choose_conv sends there; all tensors
  // contiguous: y (N, Cout, Ho, Wo) = conv(x (N, C, H, W), w (Cout, C/groups, kh, kw)), no bias;
  // dx (N, C, H, W) = its data gradient from gy (N, Cout, Ho, Wo); dw += its weight gradient from
  // gy and x. A backend without such kernels leaves these alone: they fail, naming the op and device.
  virtual void conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                             int64_t groups);
  virtual void conv2d_direct_data(const Tensor& dx, const Tensor& gy, const Tensor& w,
                                  const Conv2dGeometry& g, int64_t groups);
  virtual void conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x,
                                    const Conv2dGeometry& g, int64_t groups);
  // Pooling over x (P, H, W) contiguous planes; out/indices (P, Ho, Wo). int64 indices are the
  // winner's h*W + w in its plane; uint8 indices its tap ki*kw + kj in its window.
  virtual void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x,
                          const Pool2dGeometry& g) = 0;
  // gx (P, H, W) = the gradient routed to each window's winner.
  virtual void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices,
                                   const Pool2dGeometry& g) = 0;
  virtual void avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dGeometry& g) = 0;
  virtual void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dGeometry& g) = 0;
  // out (N, C, S) contiguous += bias[c] (a conv's bias).
  virtual void channel_bias(const Tensor& out, const Tensor& bias) = 0;
  // out (C) = the sum of x (N, C, S) contiguous over N and S (a conv's bias gradient).
  virtual void channel_sums(const Tensor& out, const Tensor& x) = 0;
  // p, g, buf (and m, v) contiguous, of one floating dtype and shape. SGD, as in PyTorch:
  //   d = g + wd p; with momentum, buf = first ? d : momentum buf + (1 - dampening) d and
  //   d = nesterov ? d + momentum buf : buf; then p -= lr d. (buf is undefined without momentum.)
  virtual void sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SgdStep& s) = 0;
  // Adam (AdamW when decoupled): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
  //   p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
  virtual void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                         const AdamStep& s) = 0;
  // Per-channel statistics of x (N, C, S) contiguous: mean and biased variance (C each).
  virtual void channel_moments(const Tensor& mean, const Tensor& var, const Tensor& x) = 0;
  // Per-channel sums of gy and gy*x over (N, S).
  virtual void channel_grad_sums(const Tensor& sum_gy, const Tensor& sum_gyx, const Tensor& gy,
                                 const Tensor& x) = 0;
  // out = a[c] * x + d[c] (+ b[c] * x2 when x2 is defined); all (N, C, S) contiguous.
  virtual void channel_affine(const Tensor& out, const Tensor& x, const Tensor& a, const Tensor& d,
                              const Tensor& x2, const Tensor& b) = 0;
  // Softmax (or log-softmax) over dim; x and out contiguous.
  virtual void softmax(const Tensor& out, const Tensor& x, int64_t dim, bool log) = 0;
  virtual void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, int64_t dim,
                                bool log) = 0;
};

// gemm's cases with nothing to multiply, the same on every backend: an empty out (nothing to do)
// or K == 0 (out = beta * out). Returns true when it handled the call.
bool gemm_without_products(Backend& be, const Tensor& out, int64_t K, double beta);

// Calls f with a type tag of max_pool2d's index type: int64 places or uint8 window taps.
template <class F>
void visit_pool_indices(const Tensor& indices, F&& f) {
  if (indices.dtype() == kUInt8) return f(type_tag<uint8_t>{});
  MG_CHECK(indices.dtype() == kInt64, "max_pool2d: indices must be int64 or uint8, got ", indices.dtype());
  f(type_tag<int64_t>{});
}

// The backend of a device; throws a clear error if it is not built into this minigrad.
Backend& backend_for(Device d);
void register_backend(DeviceType t, Backend* b);
// True when this build has kernels for d (CPU always; CUDA once its backend is registered).
bool device_available(Device d);
// Waits until all work queued on d has finished (CUDA runs kernels asynchronously, like
// torch::cuda::synchronize()); nothing to wait for on the CPU.
void synchronize(Device d);

}  // namespace minigrad
