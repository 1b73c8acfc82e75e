#include "open_conv.h"

#include <cmath>

namespace minigrad::open_conv_detail {

void check_cpu(const Tensor& x) {
  MG_CHECK(x.device().is_cpu(), "open_conv2d: the fused open-convolution kernel runs on the CPU only in this "
                                "build; got a tensor on ", x.device());
}

Tensor run_patch_hook(const TensorFn& patch, const Tensor& cols) {
  const Shape want{1, cols.numel() / cols.size(-1), cols.size(-1)};
  Tensor in = cols.dim() == 3 ? cols : cols.view(want);
  Tensor out = patch(in);
  MG_CHECK(out.defined() && out.sizes() == want, "open_conv2d: the patch hook changed the columns' shape from ",
           want, " to ", out.defined() ? out.sizes() : Shape{},
           "; it must map each tile of columns (1, Cin*kh*kw, L) to the same shape");
  MG_CHECK(out.dtype() == cols.dtype() && out.device() == cols.device(), "open_conv2d: the patch hook returned ",
           out.dtype(), " on ", out.device(), " for columns of ", cols.dtype(), " on ", cols.device());
  return out;
}

void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  backend_for(out.device()).gemm(out.unsqueeze(0), a.unsqueeze(0), b.unsqueeze(0), alpha, beta);
}

void gemm_forward_tile(const Tensor& P, const Tensor& w, const Tensor& out, const Plan& p) {
  Tensor w2 = w.view({p.Cout, p.K});
  for (int64_t g = 0; g < p.G; ++g)
    gemm_into(out.narrow(0, g * p.Og, p.Og), w2.narrow(0, g * p.Og, p.Og), P.narrow(0, g * p.K, p.K), 1.0, 0.0);
}

void gemm_backward_tile(const Tensor& P, const Tensor& w, const Tensor& gy, const Tensor& dw, const Tensor& dP,
                        const Plan& p) {
  Tensor w2 = w.view({p.Cout, p.K});
  Tensor dw2 = dw.defined() ? dw.view({p.Cout, p.K}) : Tensor();
  for (int64_t g = 0; g < p.G; ++g) {
    Tensor gyg = gy.narrow(0, g * p.Og, p.Og), Pg = P.narrow(0, g * p.K, p.K);
    if (dw2.defined()) gemm_into(dw2.narrow(0, g * p.Og, p.Og), gyg, Pg.t(), 1.0, 1.0);
    if (dP.defined()) gemm_into(dP.narrow(0, g * p.K, p.K), w2.narrow(0, g * p.Og, p.Og).t(), gyg, 1.0, 0.0);
  }
}

bool rows_identical(const Tensor& w, int64_t groups) {
  Tensor r = w.detach().contiguous().view({groups, w.size(0) / groups, -1});
  return allclose(r, r.narrow(1, 0, 1).expand(r.sizes()), 0.0, 0.0);
}

void check_separable_sample(const std::string& name, double x, double w, double combined, double separated) {
  MG_CHECK(std::abs(combined - separated) <= 1e-9 * (1.0 + std::abs(combined)), "open_conv2d: combine functor ",
           name, " declares a separable form sum_i f(i, x) * g(i, w) that disagrees with its operator() at x=", x,
           ", w=", w, ": ", separated, " vs ", combined);
}

}  // namespace minigrad::open_conv_detail
