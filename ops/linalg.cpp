// Matrix products: mm, bmm and matmul (1-D, 2-D, batched with broadcast batch dims).
#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

namespace {

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_computable(op, a.dtype());
  MG_CHECK(a.device() == b.device(), op, ": expected both tensors on one device, got ", a.device(),
           " and ", b.device());
  MG_CHECK(a.dtype() == b.dtype(), op, ": expected one dtype, got ", a.dtype(), " (shape ", a.sizes(),
           ") and ", b.dtype(), " (shape ", b.sizes(), ")");
}

// out = a @ b for 3-D a (B,m,k), b (B,k,n), both detached.
Tensor gemm3(const Tensor& a, const Tensor& b) {
  Tensor out = empty({a.size(0), a.size(1), b.size(2)}, a.options());
  backend_for(a.device()).gemm(out, a, b, 1.0, 0.0);
  return out;
}

// Whether the last two dims of t are a transposed contiguous matrix (t = u.t() for a contiguous u,
// as Linear's weight.t() is). The products' backward then computes that input's gradient in the
// same layout, as the transpose of a contiguous product (the same GEMM, operands swapped), as
// LibTorch's mm_mat2_backward does: the gradient that reaches the leaf through t()'s backward is
// then contiguous, and the leaf takes it as it is instead of copying it element by element.
bool column_major(const Tensor& t) {
  const int64_t d = t.dim();
  return t.size(d - 2) > 1 && t.size(d - 1) > 1 && t.stride(d - 2) == 1 && t.stride(d - 1) == t.size(d - 2);
}

}  // namespace

Tensor mm(const Tensor& a, const Tensor& b) {
  check_pair("mm", a, b);
  MG_CHECK(a.dim() == 2 && b.dim() == 2, "mm: expected 2-D tensors, got shapes ", a.sizes(), " and ",
           b.sizes());
  MG_CHECK(a.size(1) == b.size(0), "mm: shapes ", a.sizes(), " and ", b.sizes(),
           " cannot be multiplied (", a.size(1), " != ", b.size(0), ")");
  Tensor out = gemm3(a.detach().unsqueeze(0), b.detach().unsqueeze(0)).view({a.size(0), b.size(1)});
  if (needs_grad(a, b)) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    const bool ca = column_major(a), cb = column_major(b);
    SavedTensor sa = gb ? SavedTensor(a) : SavedTensor(), sb = ga ? SavedTensor(b) : SavedTensor();
    record("mm", {a, b}, {out}, [=](std::vector<Tensor>& g) {
      Tensor da, db;
      if (ga) da = ca ? mm(sb.unpack("mm"), g[0].t()).t() : mm(g[0], sb.unpack("mm").t());
      if (gb) db = cb ? mm(g[0].t(), sa.unpack("mm")).t() : mm(sa.unpack("mm").t(), g[0]);
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_pair("bmm", a, b);
  MG_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: expected 3-D tensors, got shapes ", a.sizes(), " and ",
           b.sizes());
  MG_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), "bmm: shapes ", a.sizes(), " and ",
           b.sizes(), " cannot be multiplied");
  Tensor out = gemm3(a.detach(), b.detach());
  if (needs_grad(a, b)) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    const bool ca = column_major(a), cb = column_major(b);
    SavedTensor sa = gb ? SavedTensor(a) : SavedTensor(), sb = ga ? SavedTensor(b) : SavedTensor();
    record("bmm", {a, b}, {out}, [=](std::vector<Tensor>& g) {
      Tensor da, db;
      if (ga)
        da = ca ? bmm(sb.unpack("bmm"), g[0].transpose(1, 2)).transpose(1, 2)
                : bmm(g[0], sb.unpack("bmm").transpose(1, 2));
      if (gb)
        db = cb ? bmm(g[0].transpose(1, 2), sa.unpack("bmm")).transpose(1, 2)
                : bmm(sa.unpack("bmm").transpose(1, 2), g[0]);
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_pair("matmul", a, b);
  MG_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments need at least 1 dim, got shapes ",
           a.sizes(), " and ", b.sizes());
  if (a.dim() <= 2 && b.dim() <= 2) {
    Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a, b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    MG_CHECK(a2.size(1) == b2.size(0), "matmul: shapes ", a.sizes(), " and ", b.sizes(),
             " cannot be multiplied (", a2.size(1), " != ", b2.size(0), ")");
    Tensor r = mm(a2, b2);
    if (a.dim() == 1) r = r.squeeze(0);
    if (b.dim() == 1) r = r.squeeze(-1);
    return r;
  }
  // Batched: broadcast the batch dims, flatten them into one, and run bmm.
  Tensor a3 = a.dim() == 1 ? a.unsqueeze(0) : a, b3 = b.dim() == 1 ? b.unsqueeze(1) : b;
  const int64_t m = a3.size(-2), k = a3.size(-1), k2 = b3.size(-2), n = b3.size(-1);
  MG_CHECK(k == k2, "matmul: shapes ", a.sizes(), " and ", b.sizes(), " cannot be multiplied (", k,
           " != ", k2, ")");
  Shape ba(a3.sizes().begin(), a3.sizes().end() - 2), bb(b3.sizes().begin(), b3.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  Shape ea = batch, eb = batch, out_shape = batch;
  ea.insert(ea.end(), {m, k});
  eb.insert(eb.end(), {k, n});
  const int64_t B = numel_of(batch);
  Tensor r = bmm(a3.expand(ea).reshape({B, m, k}), b3.expand(eb).reshape({B, k, n}));
  if (a.dim() > 1) out_shape.push_back(m);
  if (b.dim() > 1) out_shape.push_back(n);
  return r.reshape(out_shape);
}

}  // namespace minigrad
