// batch_norm with a fused per-channel backward, and dropout.
#include "norm.h"

#include <cmath>

#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  MG_CHECK(x.dim() >= 2, "batch_norm: expected input of shape (N, C, ...), got ", x.sizes());
  MG_CHECK(is_floating(x.dtype()), "batch_norm: expected a floating tensor, got ", x.dtype());
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(N * C, 1);
  for (const Tensor* t : {&running_mean, &running_var, &weight, &bias})
    if (t->defined())
      MG_CHECK(t->dim() == 1 && t->size(0) == C && t->dtype() == x.dtype() && t->device() == x.device(),
               "batch_norm: per-channel tensor of shape ", t->sizes(), " (", t->dtype(), ", ", t->device(),
               ") does not match the ", C, " channels of input ", x.sizes(), " (", x.dtype(), ", ",
               x.device(), ")");
  MG_CHECK(training || (running_mean.defined() && running_var.defined()),
           "batch_norm: eval mode needs running_mean and running_var");
  MG_CHECK(!training || N * S > 1, "batch_norm: expected more than 1 value per channel when training, "
           "got input of shape ", x.sizes());
  Backend& be = backend_for(x.device());
  Tensor x3 = x.detach().contiguous().view({N, C, S});
  TensorOptions co = x.options();
  Tensor mean, var;
  if (training) {
    mean = empty({C}, co);
    var = empty({C}, co);
    be.channel_moments(mean, var, x3);
    if (running_mean.defined()) {
      NoGradGuard ng;
      const double M = double(N * S);
      running_mean.detach().mul_(1 - momentum).add_(mean, momentum);
      running_var.detach().mul_(1 - momentum).add_(var, momentum * M / (M - 1));
    }
  } else {
    mean = running_mean.detach();
    var = running_var.detach();
  }
  Tensor istd, scale, shift;
  {
    NoGradGuard ng;
    istd = 1.0 / sqrt(add(var, eps));
    scale = weight.defined() ? mul(weight.detach(), istd) : istd;
    shift = sub(bias.defined() ? bias.detach() : zeros({C}, co), mul(mean, scale));
  }
  Tensor out = empty(x.sizes(), co);
  be.channel_affine(out.view({N, C, S}), x3, scale.contiguous(), shift.contiguous(), {}, {});
  if (needs_grad(x, weight, bias)) {
    const bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad(),
               gb = bias.defined() && bias.requires_grad();
    SavedTensor sx(x), smean(mean), sistd(istd), sscale(scale);
    const Shape xs = x.sizes();
    record("batch_norm", {x, weight, bias}, {out}, [=](std::vector<Tensor>& g) {
      Backend& b = backend_for(g[0].device());
      Tensor gy = g[0].contiguous().view({N, C, S});
      Tensor xv = sx.unpack("batch_norm").contiguous().view({N, C, S});
      Tensor mu = smean.unpack("batch_norm"), is = sistd.unpack("batch_norm"), sc = sscale.unpack("batch_norm");
      Tensor s_gy = empty({C}, gy.options()), s_gyx = empty({C}, gy.options());
      b.channel_grad_sums(s_gy, s_gyx, gy, xv);
      // sum(gy * x_hat) per channel, from the two sums
      Tensor s_gy_xhat = mul(is, sub(s_gyx, mul(mu, s_gy)));
      Tensor dx;
      if (gx) {
        dx = empty(xs, gy.options());
        if (training) {
          // dx = scale * (gy - mean(gy) - x_hat * mean(gy * x_hat))  =  A*gy + B*x + D
          const double M = double(N * S);
          Tensor k = div(s_gy_xhat, M);
          Tensor A = sc, B = neg(mul(mul(sc, is), k));
          Tensor D = sub(mul(mul(sc, is), mul(k, mu)), mul(sc, div(s_gy, M)));
          b.channel_affine(dx.view({N, C, S}), gy, A.contiguous(), D.contiguous(), xv, B.contiguous());
        } else {
          b.channel_affine(dx.view({N, C, S}), gy, sc.contiguous(), zeros({C}, gy.options()), {}, {});
        }
      }
      return std::vector<Tensor>{dx, gw ? s_gy_xhat : Tensor(), gb ? s_gy : Tensor()};
    });
  }
  return out;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  MG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return mul(x, zeros_like(x.detach()));
  Tensor keep = ge(rand(x.sizes(), TensorOptions(x.dtype()), gen), p).to(x.dtype()).to(x.device());
  return mul(x, mul(keep, 1.0 / (1.0 - p)));
}

}  // namespace minigrad
