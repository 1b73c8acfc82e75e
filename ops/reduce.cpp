// Reductions: sum, mean, var, max/min (all, or along a dim with indices), argmax/argmin.
#include <algorithm>

#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

namespace {

// Wraps and dedupes dims; returns the kept-dim shape (reduced dims set to 1).
Shape keep_shape(const char* op, const Tensor& x, Shape& dims) {
  check_computable(op, x.dtype());
  Shape ks = x.sizes();
  const int64_t n = x.dim();
  for (auto& d : dims) {
    MG_CHECK(d >= -std::max<int64_t>(n, 1) && d < std::max<int64_t>(n, 1), op, ": dim ", d,
             " is out of range for a tensor of shape ", x.sizes());
    if (d < 0) d += n;
  }
  std::sort(dims.begin(), dims.end());
  MG_CHECK(std::adjacent_find(dims.begin(), dims.end()) == dims.end(), op, ": dim repeated in ", dims);
  for (int64_t d : dims)
    if (d < n) ks[size_t(d)] = 1;
  return ks;
}

Shape drop_dims(const Shape& ks, const Shape& dims) {
  Shape out;
  for (size_t i = 0; i < ks.size(); ++i)
    if (!std::binary_search(dims.begin(), dims.end(), int64_t(i))) out.push_back(ks[i]);
  return out;
}

Shape all_dims(const Tensor& x) {
  Shape d(size_t(x.dim()));
  for (int64_t i = 0; i < x.dim(); ++i) d[size_t(i)] = i;
  return d;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims_in, bool keepdim) {
  Shape dims = dims_in;
  Shape ks = keep_shape("sum", x, dims);
  Tensor out = empty(ks, x.options());
  backend_for(x.device()).reduce(ReduceOp::Sum, out, x.detach());
  if (!keepdim) out = out.view(drop_dims(ks, dims));
  if (needs_grad(x)) {
    Shape xs = x.sizes();
    record("sum", {x}, {out}, [xs, ks](std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].reshape(ks).expand(xs)};
    });
  }
  return out;
}

Tensor sum(const Tensor& x) { return sum(x, all_dims(x)); }

Tensor mean(const Tensor& x, const Shape& dims_in, bool keepdim) {
  MG_CHECK(is_floating(x.dtype()), "mean: expected a floating tensor, got ", x.dtype(), " of shape ",
           x.sizes());
  Shape dims = dims_in;
  Shape ks = keep_shape("mean", x, dims);
  const int64_t n = numel_of(ks) ? x.numel() / numel_of(ks) : 0;  // 0 gives NaN, as torch.mean
  return div(sum(x, dims, keepdim), double(n));
}

Tensor mean(const Tensor& x) { return mean(x, all_dims(x)); }

Tensor var(const Tensor& x, const Shape& dims_in, int64_t correction, bool keepdim) {
  MG_CHECK(is_floating(x.dtype()), "var: expected a floating tensor, got ", x.dtype());
  Shape dims = dims_in;
  Shape ks = keep_shape("var", x, dims);
  const int64_t n = numel_of(ks) ? x.numel() / numel_of(ks) : 0;
  MG_CHECK(n - correction > 0, "var: ", n, " elements per reduction with correction ", correction,
           " leave no degrees of freedom (shape ", x.sizes(), ", dims ", dims, ")");
  Tensor d = sub(x, mean(x, dims, /*keepdim=*/true));
  return div(sum(mul(d, d), dims, keepdim), double(n - correction));
}

Tensor var(const Tensor& x, int64_t correction) { return var(x, all_dims(x), correction); }

namespace {

Tensor extreme_all(const char* op, ReduceOp rop, const Tensor& x) {
  MG_CHECK(x.numel() > 0, op, ": cannot reduce an empty tensor of shape ", x.sizes());
  Shape dims = all_dims(x);
  Shape ks = keep_shape(op, x, dims);
  Tensor out = empty(ks, x.options());
  backend_for(x.device()).reduce(rop, out, x.detach());
  out = out.view({});
  if (needs_grad(x)) {
    // Ties share the gradient evenly, as in PyTorch's max()/min() of all elements.
    SavedTensor sx(x), so(out);
    record(op, {x}, {out}, [=](std::vector<Tensor>& g) {
      Tensor mask = eq(sx.unpack(op), so.unpack(op)).to(g[0].dtype());
      return std::vector<Tensor>{mul(mask, div(g[0], sum(mask)))};
    });
  }
  return out;
}

std::tuple<Tensor, Tensor> extreme_dim(const char* op, ReduceOp rop, const Tensor& x, int64_t dim,
                                       bool keepdim) {
  MG_CHECK(x.dim() > 0, op, ": a 0-dim tensor has no dim ", dim);
  Shape dims{dim};
  Shape ks = keep_shape(op, x, dims);
  dim = dims[0];
  MG_CHECK(x.size(dim) > 0, op, ": cannot reduce dim ", dim, " of size 0 (shape ", x.sizes(), ")");
  Tensor values = empty(ks, x.options()), indices = empty(ks, TensorOptions(kInt64).device(x.device()));
  backend_for(x.device()).reduce_arg(rop, values, indices, x.detach(), dim);
  if (!keepdim) {
    values = values.squeeze(dim);
    indices = indices.squeeze(dim);
  }
  if (needs_grad(x)) {
    Shape xs = x.sizes();
    SavedTensor si(indices);
    record(op, {x}, {values}, [=](std::vector<Tensor>& g) {
      Tensor idx = si.unpack(op), gv = g[0];
      if (!keepdim) {
        idx = idx.unsqueeze(dim);
        gv = gv.unsqueeze(dim);
      }
      Tensor gx = zeros(xs, g[0].options());
      backend_for(gx.device()).scatter_add(gx, dim, idx, gv);
      return std::vector<Tensor>{gx};
    });
  }
  return {values, indices};
}

}  // namespace

Tensor max(const Tensor& x) { return extreme_all("max", ReduceOp::Max, x); }
Tensor min(const Tensor& x) { return extreme_all("min", ReduceOp::Min, x); }
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_dim("max", ReduceOp::Max, x, dim, keepdim);
}
std::tuple<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_dim("min", ReduceOp::Min, x, dim, keepdim);
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return std::get<1>(extreme_dim("argmax", ReduceOp::Max, x.detach(), dim, keepdim));
}
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  return std::get<1>(extreme_dim("argmin", ReduceOp::Min, x.detach(), dim, keepdim));
}
Tensor argmax(const Tensor& x) { return argmax(x.detach().reshape({-1}), 0); }
Tensor argmin(const Tensor& x) { return argmin(x.detach().reshape({-1}), 0); }

}  // namespace minigrad
