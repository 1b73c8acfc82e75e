// Pooling front ends: shapes, checks, autograd. Kernels in ops/cpu/pool.cpp.
#include "pool.h"

#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

namespace {

int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // the last window must start inside
  return out;
}

// Views x as (planes, H, W) and builds the geometry; checks the options.
Pool2dGeometry pool_geometry(const char* op, const Tensor& x, Pair2 k, std::optional<Pair2> stride,
                             Pair2 pad, Pair2 dil, bool ceil_mode) {
  MG_CHECK(x.dim() == 3 || x.dim() == 4, op, ": expected input of shape (N, C, H, W) or (C, H, W), got ",
           x.sizes());
  MG_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor, got ", x.dtype());
  Pair2 s = stride.value_or(k);
  MG_CHECK(k.h > 0 && k.w > 0, op, ": kernel_size must be positive, got (", k.h, ", ", k.w, ")");
  MG_CHECK(s.h > 0 && s.w > 0, op, ": stride must be positive, got (", s.h, ", ", s.w, ")");
  MG_CHECK(dil.h > 0 && dil.w > 0, op, ": dilation must be positive, got (", dil.h, ", ", dil.w, ")");
  MG_CHECK(pad.h >= 0 && pad.w >= 0 && pad.h <= k.h / 2 && pad.w <= k.w / 2, op, ": padding (", pad.h,
           ", ", pad.w, ") must be between 0 and half the kernel (", k.h, ", ", k.w, ")");
  const int64_t H = x.size(-2), W = x.size(-1);
  MG_CHECK(H + 2 * pad.h >= dil.h * (k.h - 1) + 1 && W + 2 * pad.w >= dil.w * (k.w - 1) + 1, op,
           ": kernel (", k.h, ", ", k.w, ") is larger than the padded input ", H + 2 * pad.h, "x",
           W + 2 * pad.w, " (input ", x.sizes(), ")");
  Pool2dGeometry p;
  p.g = Conv2dGeometry{1, H, W, k.h, k.w, s.h, s.w, pad.h, pad.w, dil.h, dil.w,
                       pooled_size(H, k.h, s.h, pad.h, dil.h, ceil_mode),
                       pooled_size(W, k.w, s.w, pad.w, dil.w, ceil_mode)};
  return p;
}

Shape out_shape(const Tensor& x, const Conv2dGeometry& g) {
  Shape s = x.sizes();
  s[s.size() - 2] = g.Ho;
  s[s.size() - 1] = g.Wo;
  return s;
}

Tensor planes(const Tensor& t) { return t.detach().contiguous().view({-1, t.size(-2), t.size(-1)}); }

Tensor avg_pool_op(const char* name, const Tensor& x, const Pool2dGeometry& p) {
  Tensor out = empty(out_shape(x, p.g), x.options());
  backend_for(x.device()).avg_pool2d(planes(out), planes(x), p);
  if (needs_grad(x)) {
    Shape xs = x.sizes();
    record(name, {x}, {out}, [xs, p](std::vector<Tensor>& g) {
      Tensor gx = empty(xs, g[0].options());
      backend_for(gx.device()).avg_pool2d_backward(planes(gx), planes(g[0]), p);
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

}  // namespace

namespace {

// max_pool2d's forward; with taps, indices are each winner's tap in its window as uint8 (an eighth
// of int64's memory on the tape) instead of PyTorch's h*W + w.
std::tuple<Tensor, Tensor> max_pool_op(const Tensor& x, const MaxPool2dOptions& o, bool taps) {
  Pool2dGeometry p = pool_geometry("max_pool2d", x, o.kernel_size, o.stride, o.padding, o.dilation, o.ceil_mode);
  Shape os = out_shape(x, p.g);
  Tensor out = empty(os, x.options()), idx = empty(os, TensorOptions(taps ? kUInt8 : kInt64).device(x.device()));
  backend_for(x.device()).max_pool2d(planes(out), planes(idx), planes(x), p);
  if (needs_grad(x)) {
    Shape xs = x.sizes();
    SavedTensor si(idx);
    record("max_pool2d", {x}, {out}, [xs, si, p](std::vector<Tensor>& g) {
      Tensor gx = empty(xs, g[0].options());
      backend_for(gx.device()).max_pool2d_backward(planes(gx), planes(g[0]), planes(si.unpack("max_pool2d")), p);
      return std::vector<Tensor>{gx};
    });
  }
  return {out, idx};
}

}  // namespace

std::tuple<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, const MaxPool2dOptions& o) {
  return max_pool_op(x, o, false);
}

Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& o) {
  const bool taps = o.kernel_size.h * o.kernel_size.w < 255;  // 255 marks a window without a winner
  return std::get<0>(max_pool_op(x, o, taps));
}

Tensor avg_pool2d(const Tensor& x, const AvgPool2dOptions& o) {
  Pool2dGeometry p = pool_geometry("avg_pool2d", x, o.kernel_size, o.stride, o.padding, 1, o.ceil_mode);
  p.count_include_pad = o.count_include_pad;
  return avg_pool_op("avg_pool2d", x, p);
}

Tensor adaptive_avg_pool2d(const Tensor& x, Pair2 size) {
  MG_CHECK(x.dim() == 3 || x.dim() == 4, "adaptive_avg_pool2d: expected input of shape (N, C, H, W) or "
           "(C, H, W), got ", x.sizes());
  MG_CHECK(is_floating(x.dtype()), "adaptive_avg_pool2d: expected a floating tensor, got ", x.dtype());
  MG_CHECK(size.h > 0 && size.w > 0, "adaptive_avg_pool2d: output size must be positive, got (", size.h,
           ", ", size.w, ")");
  MG_CHECK(x.size(-2) > 0 && x.size(-1) > 0, "adaptive_avg_pool2d: empty input plane in ", x.sizes());
  Pool2dGeometry p;
  p.g = Conv2dGeometry{1, x.size(-2), x.size(-1), 1, 1, 1, 1, 0, 0, 1, 1, size.h, size.w};
  p.adaptive = true;
  return avg_pool_op("adaptive_avg_pool2d", x, p);
}

}  // namespace minigrad
