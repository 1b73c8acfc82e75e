// minigrad CPU backend: the Backend kernels for host memory (OpenMP loops, OpenBLAS GEMM).
#pragma once
#include "../backend.h"

namespace minigrad::cpu {

class CpuBackend final : public Backend {
 public:
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& dst, double value) override;
  void unary(UnaryOp op, const Tensor& out, const Tensor& x, double p) override;
  void unary_backward(UnaryOp op, const Tensor& gx, const Tensor& gy, const Tensor& x,
                      const Tensor& y, double p) override;
  void relu_mask(const Tensor& y, const Tensor& mask, const Tensor& x) override;
  void relu_mask_backward(const Tensor& gx, const Tensor& gy, const Tensor& mask) override;
  void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, double alpha) override;
  void compare(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) override;
  void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) override;
  void reduce(ReduceOp op, const Tensor& out, const Tensor& x) override;
  void reduce_arg(ReduceOp op, const Tensor& values, const Tensor& indices, const Tensor& x,
                  int64_t dim) override;
  void gather(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) override;
  void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) override;
  void gemm(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) override;
  void im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) override;
  void col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) override;
  ConvChoice choose_conv(const Conv2dGeometry& g, int64_t groups, int64_t Cout, DType dtype,
                         ConvAlgorithm requested, bool explain) override;
  void conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                     int64_t groups) override;
  void conv2d_direct_data(const Tensor& dx, const Tensor& gy, const Tensor& w, const Conv2dGeometry& g,
                          int64_t groups) override;
  void conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x, const Conv2dGeometry& g,
                            int64_t groups) override;
  void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x,
                  const Pool2dGeometry& g) override;
  void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices,
                           const Pool2dGeometry& g) override;
  void avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dGeometry& g) override;
  void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dGeometry& g) override;
  void sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SgdStep& s) override;
  void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamStep& s) override;
  void channel_bias(const Tensor& out, const Tensor& bias) override;
  void channel_sums(const Tensor& out, const Tensor& x) override;
  void channel_moments(const Tensor& mean, const Tensor& var, const Tensor& x) override;
  void channel_grad_sums(const Tensor& sum_gy, const Tensor& sum_gyx, const Tensor& gy,
                         const Tensor& x) override;
  void channel_affine(const Tensor& out, const Tensor& x, const Tensor& a, const Tensor& d,
                      const Tensor& x2, const Tensor& b) override;
  void softmax(const Tensor& out, const Tensor& x, int64_t dim, bool log) override;
  void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, int64_t dim,
                        bool log) override;
};

Backend& backend();

}  // namespace minigrad::cpu
