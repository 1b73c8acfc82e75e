// softmax, log_softmax, gather, and the losses built on them.
#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

namespace {

Tensor softmax_op(const char* name, const Tensor& x, int64_t dim, bool log) {
  MG_CHECK(is_floating(x.dtype()), name, ": expected a floating tensor, got ", x.dtype());
  const int64_t n = std::max<int64_t>(x.dim(), 1);
  MG_CHECK(dim >= -n && dim < n, name, ": dim ", dim, " is out of range for a tensor of shape ", x.sizes());
  if (dim < 0) dim += n;
  if (x.dim() == 0) dim = 0;
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.sizes(), x.options());
  backend_for(x.device()).softmax(y, xc, dim, log);
  if (needs_grad(x)) {
    SavedTensor sy(y);
    record(name, {x}, {y}, [=](std::vector<Tensor>& g) {
      Tensor gx = empty_like(g[0]);
      backend_for(gx.device()).softmax_backward(gx, g[0].contiguous(), sy.unpack(name), dim, log);
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor reduce_loss(const Tensor& per, Reduction r) {
  switch (r) {
    case Reduction::Mean: return mean(per);
    case Reduction::Sum: return sum(per);
    case Reduction::None: return per;
  }
  return per;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_op("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_op("log_softmax", x, dim, true); }

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  MG_CHECK(index.dtype() == kInt64, "gather: index must be int64, got ", index.dtype());
  MG_CHECK(x.device() == index.device(), "gather: input on ", x.device(), " but index on ", index.device());
  MG_CHECK(x.dim() == index.dim(), "gather: index of shape ", index.sizes(),
           " must have the same number of dims as the input of shape ", x.sizes());
  const int64_t n = std::max<int64_t>(x.dim(), 1);
  MG_CHECK(dim >= -n && dim < n, "gather: dim ", dim, " is out of range for shape ", x.sizes());
  if (dim < 0) dim += n;
  for (int64_t d = 0; d < x.dim(); ++d)
    MG_CHECK(d == dim || index.size(d) <= x.size(d), "gather: index of shape ", index.sizes(),
             " is larger than the input of shape ", x.sizes(), " in dim ", d);
  Tensor out = empty(index.sizes(), x.options());
  backend_for(x.device()).gather(out, x.detach(), dim, index);
  if (needs_grad(x)) {
    Shape xs = x.sizes();
    SavedTensor si(index);
    record("gather", {x}, {out}, [=](std::vector<Tensor>& g) {
      Tensor gx = zeros(xs, g[0].options());
      backend_for(gx.device()).scatter_add(gx, dim, si.unpack("gather"), g[0]);
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  MG_CHECK(input.dim() == 2, "nll_loss: expected input of shape (N, C), got ", input.sizes());
  MG_CHECK(target.dtype() == kInt64, "nll_loss: target must be int64 class indices, got ", target.dtype());
  MG_CHECK(target.dim() == 1 && target.size(0) == input.size(0), "nll_loss: target of shape ",
           target.sizes(), " does not match input of shape ", input.sizes(), " (expected [",
           input.size(0), "])");
  if (target.numel() > 0) {
    int64_t lo = min(target).item<int64_t>(), hi = max(target).item<int64_t>();
    MG_CHECK(lo >= 0 && hi < input.size(1), "nll_loss: target ", lo < 0 ? lo : hi,
             " is out of range for ", input.size(1), " classes");
  }
  return reduce_loss(neg(gather(input, 1, target.unsqueeze(1)).squeeze(1)), reduction);
}

Tensor cross_entropy(const Tensor& input, const Tensor& target, Reduction reduction) {
  MG_CHECK(input.dim() == 2, "cross_entropy: expected logits of shape (N, C), got ", input.sizes());
  return nll_loss(log_softmax(input, 1), target, reduction);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  MG_CHECK(input.sizes() == target.sizes(), "mse_loss: input of shape ", input.sizes(),
           " and target of shape ", target.sizes(), " differ");
  Tensor d = sub(input, target);
  return reduce_loss(mul(d, d), reduction);
}

}  // namespace minigrad
