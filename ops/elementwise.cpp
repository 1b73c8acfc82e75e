// Elementwise ops: unary, binary (broadcasting, dtype promotion), comparisons, where.
// Each backward sits next to its forward and saves only what it reads.
#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

namespace {

void check_devices(const char* op, const Tensor& a, const Tensor& b) {
  MG_CHECK(a.device() == b.device(), op, ": expected both tensors on one device, got ", a.device(),
           " (shape ", a.sizes(), ") and ", b.device(), " (shape ", b.sizes(), ")");
}

// Gradient of a broadcast operand: summed back to its shape and cast back to its dtype.
Tensor to_operand(const Tensor& g, const Shape& shape, DType dt) { return sum_to(g, shape).to(dt); }

Tensor unary_op(const char* name, UnaryOp op, const Tensor& x, double p = 0.0) {
  check_computable(name, x.dtype());
  if (op != UnaryOp::Neg && op != UnaryOp::Abs)
    MG_CHECK(is_floating(x.dtype()), name, ": expected a floating tensor, got ", x.dtype(),
             " of shape ", x.sizes());
  Tensor y = empty(x.sizes(), x.options());
  if (op == UnaryOp::Relu && needs_grad(x)) {
    // relu's derivative is one bit per element (y > 0, exactly where x > 0): the node keeps that
    // bit mask, n/8 bytes, and neither x (often a conv output) nor y (often pooled, then dropped).
    Tensor mask = empty({(x.numel() + 7) / 8}, TensorOptions(kUInt8).device(x.device()));
    backend_for(x.device()).relu_mask(y, mask, x.detach().contiguous());
    record(name, {x}, {y}, [mask](std::vector<Tensor>& g) {
      // masks the incoming gradient in place when nothing else sees it
      Tensor gy = std::move(g[0]);
      Tensor gx = is_sole_owner(gy) ? gy : empty(gy.sizes(), gy.options());
      gy = gy.contiguous();
      backend_for(gx.device()).relu_mask_backward(gx, gy, mask);
      return std::vector<Tensor>{gx};
    });
    return y;
  }
  backend_for(x.device()).unary(op, y, x, p);
  if (needs_grad(x)) {
    // The derivative reads y for these ops, and x for the others (neg reads neither).
    bool uses_y = op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Sigmoid ||
                  op == UnaryOp::Tanh;
    SavedTensor sx, sy;
    if (uses_y) sy = SavedTensor(y);
    else if (op != UnaryOp::Neg) sx = SavedTensor(x);
    record(name, {x}, {y}, [=](std::vector<Tensor>& g) {
      Tensor gx = empty(g[0].sizes(), g[0].options());
      backend_for(gx.device()).unary_backward(op, gx, g[0], sx.unpack(name), sy.unpack(name), p);
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

struct Prepared {
  Tensor a, b;  // detached, promoted to one dtype, expanded to the broadcast shape
  Shape shape;
  DType dtype;
};
Prepared prepare(const char* op, const Tensor& a, const Tensor& b) {
  check_devices(op, a, b);
  check_computable(op, a.dtype());
  check_computable(op, b.dtype());
  Prepared p;
  p.shape = broadcast_shapes(a.sizes(), b.sizes(), op);
  p.dtype = promote(a.dtype(), b.dtype());
  p.a = a.detach().to(p.dtype).expand(p.shape);
  p.b = b.detach().to(p.dtype).expand(p.shape);
  return p;
}

Tensor binary_op(const char* name, BinaryOp op, const Tensor& a, const Tensor& b, double alpha = 1.0) {
  Prepared p = prepare(name, a, b);
  Tensor out = empty(p.shape, TensorOptions(p.dtype).device(a.device()));
  backend_for(out.device()).binary(op, out, p.a, p.b, alpha);
  if (!needs_grad(a, b)) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const Shape sa = a.sizes(), sb = b.sizes();
  const DType da = a.dtype(), db = b.dtype();
  switch (op) {
    case BinaryOp::Add:
    case BinaryOp::Sub: {
      double sign = op == BinaryOp::Add ? alpha : -alpha;
      record(name, {a, b}, {out}, [=](std::vector<Tensor>& g) {
        return std::vector<Tensor>{ga ? to_operand(g[0], sa, da) : Tensor(),
                                   gb ? to_operand(sign == 1.0 ? g[0] : mul(g[0], sign), sb, db) : Tensor()};
      });
      break;
    }
    case BinaryOp::Mul: {
      SavedTensor xa = gb ? SavedTensor(a) : SavedTensor(), xb = ga ? SavedTensor(b) : SavedTensor();
      record(name, {a, b}, {out}, [=](std::vector<Tensor>& g) {
        return std::vector<Tensor>{ga ? to_operand(mul(g[0], xb.unpack(name)), sa, da) : Tensor(),
                                   gb ? to_operand(mul(g[0], xa.unpack(name)), sb, db) : Tensor()};
      });
      break;
    }
    case BinaryOp::Div: {
      SavedTensor xb(b), xo = gb ? SavedTensor(out) : SavedTensor();
      record(name, {a, b}, {out}, [=](std::vector<Tensor>& g) {
        Tensor bv = xb.unpack(name);
        Tensor gq = div(g[0], bv);
        return std::vector<Tensor>{ga ? to_operand(gq, sa, da) : Tensor(),
                                   gb ? to_operand(neg(mul(gq, xo.unpack(name))), sb, db) : Tensor()};
      });
      break;
    }
    case BinaryOp::Max:
    case BinaryOp::Min: {
      // The gradient goes to the larger (smaller) operand, split evenly on ties, as in PyTorch.
      SavedTensor xa(a), xb(b);
      const bool is_max = op == BinaryOp::Max;
      record(name, {a, b}, {out}, [=](std::vector<Tensor>& g) {
        Tensor av = xa.unpack(name), bv = xb.unpack(name);
        Tensor wins = is_max ? gt(av, bv) : lt(av, bv), tie = eq(av, bv);
        Tensor half = mul(g[0], 0.5), zero = zeros({}, g[0].options());
        Tensor g_a = where(wins, g[0], where(tie, half, zero));
        Tensor g_b = where(wins, zero, where(tie, half, g[0]));
        return std::vector<Tensor>{ga ? to_operand(g_a, sa, da) : Tensor(),
                                   gb ? to_operand(g_b, sb, db) : Tensor()};
      });
      break;
    }
  }
  return out;
}

// A scalar operand as a 0-dim tensor of x's dtype (an int64 tensor meets a fractional scalar
// in float32, as in PyTorch).
Tensor scalar_like(const Tensor& x, double v) {
  DType dt = x.dtype() == kInt64 && v != double(int64_t(v)) ? kFloat32 : x.dtype();
  return scalar_tensor(v, TensorOptions(dt).device(x.device()));
}

Tensor compare_op(const char* name, CompareOp op, const Tensor& a, const Tensor& b) {
  Prepared p = prepare(name, a, b);
  Tensor out = empty(p.shape, TensorOptions(kInt64).device(a.device()));
  backend_for(out.device()).compare(op, out, p.a, p.b);
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary_op("neg", UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op("exp", UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", UnaryOp::Sqrt, x); }
Tensor abs(const Tensor& x) { return unary_op("abs", UnaryOp::Abs, x); }
Tensor pow(const Tensor& x, double e) { return unary_op("pow", UnaryOp::Pow, x, e); }
Tensor relu(const Tensor& x) { return unary_op("relu", UnaryOp::Relu, x); }
Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", UnaryOp::Tanh, x); }
Tensor gelu(const Tensor& x) { return unary_op("gelu", UnaryOp::Gelu, x); }

Tensor add(const Tensor& a, const Tensor& b, double alpha) { return binary_op("add", BinaryOp::Add, a, b, alpha); }
Tensor sub(const Tensor& a, const Tensor& b, double alpha) { return binary_op("sub", BinaryOp::Sub, a, b, alpha); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op("mul", BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op("div", BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op("maximum", BinaryOp::Max, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op("minimum", BinaryOp::Min, a, b); }
Tensor add(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor sub(const Tensor& a, double b) { return sub(a, scalar_like(a, b)); }
Tensor mul(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor div(const Tensor& a, double b) { return div(a, scalar_like(a, b)); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(b, a), b); }

Tensor eq(const Tensor& a, const Tensor& b) { return compare_op("eq", CompareOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare_op("ne", CompareOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_op("lt", CompareOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare_op("le", CompareOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_op("gt", CompareOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare_op("ge", CompareOp::Ge, a, b); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_like(a, b)); }
Tensor ne(const Tensor& a, double b) { return ne(a, scalar_like(a, b)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_like(a, b)); }
Tensor le(const Tensor& a, double b) { return le(a, scalar_like(a, b)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_like(a, b)); }
Tensor ge(const Tensor& a, double b) { return ge(a, scalar_like(a, b)); }
Tensor operator==(const Tensor& a, double b) { return eq(a, scalar_like(a, b)); }
Tensor operator!=(const Tensor& a, double b) { return ne(a, scalar_like(a, b)); }
Tensor operator<(const Tensor& a, double b) { return lt(a, scalar_like(a, b)); }
Tensor operator<=(const Tensor& a, double b) { return le(a, scalar_like(a, b)); }
Tensor operator>(const Tensor& a, double b) { return gt(a, scalar_like(a, b)); }
Tensor operator>=(const Tensor& a, double b) { return ge(a, scalar_like(a, b)); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_devices("where", cond, a);
  Prepared p = prepare("where", a, b);
  Shape shape = broadcast_shapes(cond.sizes(), p.shape, "where");
  Tensor out = empty(shape, TensorOptions(p.dtype).device(a.device()));
  backend_for(out.device()).where(out, cond.detach().expand(shape), p.a.expand(shape), p.b.expand(shape));
  if (needs_grad(a, b)) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    const Shape sa = a.sizes(), sb = b.sizes();
    const DType da = a.dtype(), db = b.dtype();
    SavedTensor c(cond);
    record("where", {a, b}, {out}, [=](std::vector<Tensor>& g) {
      Tensor cv = c.unpack("where"), zero = zeros({}, g[0].options());
      return std::vector<Tensor>{ga ? to_operand(where(cv, g[0], zero), sa, da) : Tensor(),
                                 gb ? to_operand(where(cv, zero, g[0]), sb, db) : Tensor()};
    });
  }
  return out;
}

}  // namespace minigrad
