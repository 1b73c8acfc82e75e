// unfold/fold, conv2d and conv_transpose2d. Both convs run on one tiled core made of three named
// GEMMs; the backward of each is the same core with other GEMMs switched on.
#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

Padding2::Padding2(const std::string& m) {
  if (m == "same") mode = Mode::Same;
  else if (m == "valid") mode = Mode::Valid;
  else MG_FAIL("conv padding: expected a number, a pair, \"same\" or \"valid\", got \"", m, "\"");
}

namespace {

std::atomic<size_t> g_workspace_limit{size_t(8) << 20};
std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Auto};

void check_pair(const char* op, const char* what, Pair2 p, int64_t min) {
  MG_CHECK(p.h >= min && p.w >= min, op, ": ", what, " must be ", min == 0 ? ">= 0" : "positive",
           ", got (", p.h, ", ", p.w, ")");
}

// A conv seen from its GEMMs: y-side (N, G*Og, Ho*Wo) against image side (N, G*Cg, H, W).
struct ConvPlan {
  Conv2dGeometry g;
  int64_t N = 0, G = 1, Og = 0, Cg = 0;
  bool one_by_one = false;  // kernel 1x1, stride 1, no padding: the columns are the image itself
  int64_t K() const { return Cg * g.kh * g.kw; }
  int64_t L() const { return g.Ho * g.Wo; }
};

ConvPlan make_plan(int64_t N, int64_t G, int64_t Og, const Conv2dGeometry& g) {
  ConvPlan p;
  p.g = g;
  p.N = N;
  p.G = G;
  p.Og = Og;
  p.Cg = g.C / G;
  p.one_by_one = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_h == 0 && g.pad_w == 0 &&
                 g.Ho == g.H && g.Wo == g.W;
  return p;
}

// The backend's choice for this plan on device d (see Backend::choose_conv). With
// MINIGRAD_CONV_VERBOSE=1 the first conv of each shape prints it.
ConvChoice choose(const ConvPlan& p, DType dt, Device d) {
  static const bool verbose = [] {
    const char* v = std::getenv("MINIGRAD_CONV_VERBOSE");
    return v && *v && std::string(v) != "0";
  }();
  ConvChoice c = backend_for(d).choose_conv(p.g, p.G, p.G * p.Og, dt, conv_algorithm(), verbose);
  if (verbose) {
    static std::mutex mu;
    static std::set<std::string> seen;
    const Conv2dGeometry& g = p.g;
    std::string key = detail::str_cat("conv N=", p.N, " C=", g.C, " ", g.H, "x", g.W, " -> ", p.G * p.Og, " ",
                                      g.Ho, "x", g.Wo, " k ", g.kh, "x", g.kw, " s ", g.sh, "x", g.sw, " p ",
                                      g.pad_h, "x", g.pad_w, " d ", g.dh, "x", g.dw, " g ", p.G, " ", dt, " on ", d);
    std::lock_guard<std::mutex> lock(mu);
    if (seen.insert(key).second) std::fprintf(stderr, "minigrad: %s: %s\n", key.c_str(), c.reason.c_str());
  }
  return c;
}

void gemm2(const Tensor& out, const Tensor& a, const Tensor& b, double beta) {
  backend_for(out.device()).gemm(out.unsqueeze(0), a.unsqueeze(0), b.unsqueeze(0), 1.0, beta);
}

// The first n elements of a flat buffer, as a contiguous (rows, cols) matrix.
Tensor carve(const Tensor& buf, int64_t rows, int64_t cols) {
  return buf.narrow(0, 0, rows * cols).view({rows, cols});
}

// The three GEMMs of a conv, tile by tile over the batch (all tensors detached, contiguous;
// undefined ones are not computed):
//   forward:  yout_g   = W_g   @ cols_g               where cols = im2col(ximg)
//   weight:   dw_g    += ysrc_g @ cols_gᵀ  (beta = 1)
//   data:     dcols_g  = W_gᵀ  @ ysrc_g,  xout = col2im(dcols)
// Where the backend chooses them (Backend::choose_conv), its direct kernels compute the same three
// products instead.
void conv_core(const ConvPlan& p, const Tensor& w, const Tensor& ximg, const Tensor& ysrc,
               const Tensor& yout, const Tensor& dw, const Tensor& xout) {
  Backend& be = backend_for(w.device());
  if (choose(p, w.dtype(), w.device()).direct) {  // the same three products, without columns
    if (yout.defined()) be.conv2d_direct(yout, ximg, w, p.g, p.G);
    if (dw.defined()) be.conv2d_direct_weight(dw, ysrc, ximg, p.g, p.G);
    if (xout.defined()) be.conv2d_direct_data(xout, ysrc, w, p.g, p.G);
    return;
  }
  const int64_t G = p.G, Og = p.Og, K = p.K(), L = p.L(), rows = p.g.rows(), Y = G * Og;
  const bool need_cols = yout.defined() || dw.defined();
  const bool need_dcols = xout.defined();
  const int64_t per_image = (int64_t(need_cols) + int64_t(need_dcols)) * rows * L +
                            (int64_t(ysrc.defined()) + int64_t(yout.defined())) * Y * L;
  int64_t T = 1;
  if (!p.one_by_one)
    T = std::clamp<int64_t>(int64_t(conv_workspace_limit() / w.element_size()) / std::max<int64_t>(per_image, 1),
                            1, std::max<int64_t>(p.N, 1));
  TensorOptions opt = w.options();
  Tensor cols_buf, dcols_buf, ysrc_buf, yout_buf;
  if (!p.one_by_one && need_cols) cols_buf = empty({rows * T * L}, opt);
  if (!p.one_by_one && need_dcols) dcols_buf = empty({rows * T * L}, opt);
  if (T > 1 && ysrc.defined()) ysrc_buf = empty({Y * T * L}, opt);
  if (T > 1 && yout.defined()) yout_buf = empty({Y * T * L}, opt);
  Tensor w3 = w.view({G, Og, K}), dw3 = dw.defined() ? dw.view({G, Og, K}) : Tensor();

  for (int64_t n0 = 0; n0 < p.N; n0 += T) {
    const int64_t t = std::min(T, p.N - n0), TL = t * L;
    // y-side tiles as (Y, t*L): a single image's block is used in place.
    auto y_view = [&](const Tensor& y) { return y.narrow(0, n0, t).view({t, Y, L}).permute({1, 0, 2}); };
    Tensor ys, yo;
    if (ysrc.defined()) {
      ys = t == 1 ? ysrc[n0].view({Y, L}) : carve(ysrc_buf, Y, TL);
      if (t > 1) be.copy(ys.view({Y, t, L}), y_view(ysrc));
    }
    if (yout.defined()) yo = t == 1 ? yout[n0].view({Y, L}) : carve(yout_buf, Y, TL);
    Tensor cols, dcols;
    if (need_cols) {
      if (p.one_by_one) cols = ximg[n0].view({rows, L});
      else {
        cols = carve(cols_buf, rows, TL);
        be.im2col(cols, ximg.narrow(0, n0, t), p.g);
      }
    }
    if (need_dcols) dcols = p.one_by_one ? xout[n0].view({rows, L}) : carve(dcols_buf, rows, TL);
    for (int64_t g = 0; g < G; ++g) {
      Tensor wg = w3[g];
      if (yout.defined()) gemm2(yo.narrow(0, g * Og, Og), wg, cols.narrow(0, g * K, K), 0.0);   // forward
      if (dw.defined()) gemm2(dw3[g], ys.narrow(0, g * Og, Og), cols.narrow(0, g * K, K).t(), 1.0);  // weight
      if (need_dcols) gemm2(dcols.narrow(0, g * K, K), wg.t(), ys.narrow(0, g * Og, Og), 0.0);  // data
    }
    if (yout.defined() && t > 1) be.copy(y_view(yout), yo.view({Y, t, L}));
    if (need_dcols && !p.one_by_one) be.col2im(xout.narrow(0, n0, t), dcols, p.g);
  }
}

// out is a conv's fresh (N, Cout, Ho, Wo) output.
void add_bias(const Tensor& out, const Tensor& bias) {
  if (!bias.defined() || out.numel() == 0) return;
  backend_for(out.device()).channel_bias(out.view({out.size(0), out.size(1), out.size(2) * out.size(3)}),
                                         bias.detach().contiguous());
}

// db = the sum of gy over N, Ho and Wo.
Tensor bias_grad(const Tensor& gy) {
  if (gy.numel() == 0) return zeros({gy.size(1)}, gy.options());  // an empty batch
  Tensor g = gy.contiguous(), db = empty({gy.size(1)}, gy.options());
  backend_for(g.device()).channel_sums(db, g.view({g.size(0), g.size(1), g.size(2) * g.size(3)}));
  return db;
}

// Records a conv's one tape node, saving x (for dW) and W (for dx) only when needed. Backward is
// the same tiled core: for conv2d, the weight and data GEMMs on x's columns; for the transposed
// conv, the forward GEMM on the gradient's columns (dx = conv2d(gy, W)) and the weight GEMM.
void record_conv(const char* name, const ConvPlan& p, const Tensor& x, const Tensor& w, const Tensor& bias,
                 const Tensor& out, bool transposed) {
  if (!needs_grad(x, w, bias)) return;
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
  SavedTensor sx = gw ? SavedTensor(x) : SavedTensor(), sw = gx ? SavedTensor(w) : SavedTensor();
  const Shape ws = w.sizes(), xs = x.sizes();
  const TensorOptions wo = w.options();
  record(name, {x, w, bias}, {out}, [=](std::vector<Tensor>& gr) {
    Tensor gy = gr[0].contiguous();
    Tensor dx = gx ? empty(xs, gy.options()) : Tensor();
    Tensor dw = gw ? zeros(ws, wo) : Tensor();
    Tensor wv = gx ? sw.unpack(name).contiguous() : zeros(ws, wo);
    Tensor xv = gw ? sx.unpack(name).contiguous() : Tensor();
    if (transposed) conv_core(p, wv, gy, xv, dx, dw, {});
    else conv_core(p, wv, xv, gy, {}, dw, dx);
    return std::vector<Tensor>{dx, dw, gb ? bias_grad(gy) : Tensor()};
  });
}

void check_conv_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias,
                     int64_t groups) {
  MG_CHECK(x.dim() == 4, op, ": expected input of shape (N, C, H, W), got ", x.sizes());
  MG_CHECK(w.dim() == 4, op, ": expected a 4-D weight, got ", w.sizes());
  MG_CHECK(is_floating(x.dtype()) && x.dtype() == w.dtype(), op, ": input (", x.dtype(),
           ") and weight (", w.dtype(), ") must share one floating dtype");
  MG_CHECK(x.device() == w.device(), op, ": input on ", x.device(), " but weight on ", w.device());
  MG_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
  if (bias.defined()) {
    MG_CHECK(bias.dtype() == x.dtype() && bias.device() == x.device(), op, ": bias (", bias.dtype(),
             ", ", bias.device(), ") must match the input (", x.dtype(), ", ", x.device(), ")");
  }
}

}  // namespace

void set_conv_workspace_limit(size_t bytes) { g_workspace_limit = bytes; }
size_t conv_workspace_limit() { return g_workspace_limit; }
void set_conv_algorithm(ConvAlgorithm a) { g_algorithm = a; }
ConvAlgorithm conv_algorithm() { return g_algorithm; }

// ---- unfold / fold

namespace {
Conv2dGeometry unfold_geometry(const char* op, int64_t C, int64_t H, int64_t W, const UnfoldOptions& o) {
  check_pair(op, "kernel_size", o.kernel_size, 1);
  check_pair(op, "stride", o.stride, 1);
  check_pair(op, "dilation", o.dilation, 1);
  check_pair(op, "padding", o.padding, 0);
  Conv2dGeometry g{C, H, W, o.kernel_size.h, o.kernel_size.w, o.stride.h, o.stride.w,
                   o.padding.h, o.padding.w, o.dilation.h, o.dilation.w, 0, 0};
  const int64_t eh = g.dh * (g.kh - 1) + 1, ew = g.dw * (g.kw - 1) + 1;
  MG_CHECK(H + 2 * g.pad_h >= eh && W + 2 * g.pad_w >= ew, op, ": kernel ", g.kh, "x", g.kw,
           " (dilation ", g.dh, "x", g.dw, ") is larger than the padded input ", H + 2 * g.pad_h, "x",
           W + 2 * g.pad_w);
  g.Ho = (H + 2 * g.pad_h - eh) / g.sh + 1;
  g.Wo = (W + 2 * g.pad_w - ew) / g.sw + 1;
  return g;
}
}  // namespace

Tensor unfold(const Tensor& x, const UnfoldOptions& o) {
  MG_CHECK(x.dim() == 4, "unfold: expected input of shape (N, C, H, W), got ", x.sizes());
  MG_CHECK(is_floating(x.dtype()), "unfold: expected a floating tensor, got ", x.dtype());
  Conv2dGeometry g = unfold_geometry("unfold", x.size(1), x.size(2), x.size(3), o);
  const int64_t N = x.size(0);
  Tensor xc = x.detach().contiguous();
  Tensor out = empty({N, g.rows(), g.positions()}, x.options());
  for (int64_t n = 0; n < N; ++n) backend_for(x.device()).im2col(out[n], xc.narrow(0, n, 1), g);
  if (needs_grad(x)) {
    Pair2 size{x.size(2), x.size(3)};
    record("unfold", {x}, {out}, [size, o](std::vector<Tensor>& gr) {
      return std::vector<Tensor>{fold(gr[0], size, o)};
    });
  }
  return out;
}

Tensor fold(const Tensor& cols, Pair2 size, const UnfoldOptions& o) {
  MG_CHECK(cols.dim() == 3, "fold: expected columns of shape (N, C*kh*kw, L), got ", cols.sizes());
  MG_CHECK(is_floating(cols.dtype()), "fold: expected a floating tensor, got ", cols.dtype());
  const int64_t kk = o.kernel_size.h * o.kernel_size.w;
  MG_CHECK(kk > 0 && cols.size(1) % kk == 0, "fold: ", cols.size(1), " rows of ", cols.sizes(),
           " are not a multiple of the kernel's ", o.kernel_size.h, "x", o.kernel_size.w);
  check_pair("fold", "output_size", size, 1);
  Conv2dGeometry g = unfold_geometry("fold", cols.size(1) / kk, size.h, size.w, o);
  MG_CHECK(cols.size(2) == g.positions(), "fold: ", cols.size(2), " columns in ", cols.sizes(),
           " but output ", size.h, "x", size.w, " with these options has ", g.Ho, "x", g.Wo, " = ",
           g.positions(), " positions");
  const int64_t N = cols.size(0);
  Tensor cc = cols.detach().contiguous();
  Tensor out = empty({N, g.C, size.h, size.w}, cols.options());
  for (int64_t n = 0; n < N; ++n) backend_for(cols.device()).col2im(out.narrow(0, n, 1), cc[n], g);
  if (needs_grad(cols))
    record("fold", {cols}, {out}, [o](std::vector<Tensor>& gr) {
      return std::vector<Tensor>{unfold(gr[0], o)};
    });
  return out;
}

// ---- conv2d

Conv2dGeometry detail::conv2d_geometry(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias,
                                       const Conv2dOptions& o) {
  check_conv_args(op, x, w, bias, o.groups);
  const int64_t C = x.size(1), Cout = w.size(0), G = o.groups;
  MG_CHECK(C % G == 0 && Cout % G == 0, op, ": groups=", G, " must divide both the ", C,
           " input channels and the ", Cout, " output channels");
  MG_CHECK(C == w.size(1) * G, op, ": input of shape ", x.sizes(), " has ", C,
           " channels, but weight of shape ", w.sizes(), " expects ", w.size(1) * G, " (groups=", G, ")");
  if (bias.defined())
    MG_CHECK(bias.dim() == 1 && bias.size(0) == Cout, op, ": bias of shape ", bias.sizes(),
             " does not match the ", Cout, " output channels");
  check_pair(op, "stride", o.stride, 1);
  check_pair(op, "dilation", o.dilation, 1);
  const int64_t kh = w.size(2), kw = w.size(3);
  int64_t pth = o.padding.h, ptw = o.padding.w;  // top/left
  int64_t pad_total_h = 2 * pth, pad_total_w = 2 * ptw;
  if (o.padding.mode == Padding2::Mode::Same) {
    MG_CHECK(o.stride.h == 1 && o.stride.w == 1, op, ": padding=\"same\" needs stride 1, got (",
             o.stride.h, ", ", o.stride.w, ")");
    pad_total_h = o.dilation.h * (kh - 1);
    pad_total_w = o.dilation.w * (kw - 1);
    pth = pad_total_h / 2;  // any odd extra goes bottom/right, as in PyTorch
    ptw = pad_total_w / 2;
  } else if (o.padding.mode == Padding2::Mode::Valid) {
    pth = ptw = pad_total_h = pad_total_w = 0;
  }
  MG_CHECK(pth >= 0 && ptw >= 0, op, ": padding must be >= 0, got (", o.padding.h, ", ", o.padding.w, ")");
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t eh = o.dilation.h * (kh - 1) + 1, ew = o.dilation.w * (kw - 1) + 1;
  MG_CHECK(H + pad_total_h >= eh && W + pad_total_w >= ew, op, ": kernel ", kh, "x", kw, " (dilation ",
           o.dilation.h, "x", o.dilation.w, ") is larger than the padded input ", H + pad_total_h, "x",
           W + pad_total_w, " (input ", x.sizes(), ")");
  return Conv2dGeometry{C, H, W, kh, kw, o.stride.h, o.stride.w, pth, ptw, o.dilation.h, o.dilation.w,
                   (H + pad_total_h - eh) / o.stride.h + 1, (W + pad_total_w - ew) / o.stride.w + 1};
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& o) {
  const Conv2dGeometry g = detail::conv2d_geometry("conv2d", x, w, bias, o);
  const int64_t N = x.size(0), Cout = w.size(0), G = o.groups;
  ConvPlan p = make_plan(N, G, Cout / G, g);

  Tensor xd = x.detach().contiguous(), wd = w.detach().contiguous();
  Tensor out = empty({N, Cout, g.Ho, g.Wo}, x.options());
  conv_core(p, wd, xd, {}, out, {}, {});
  add_bias(out, bias);
  record_conv("conv2d", p, x, w, bias, out, /*transposed=*/false);
  return out;
}

std::string explain_conv(const Tensor& x, const Tensor& w, const Conv2dOptions& o) {
  const Conv2dGeometry g = detail::conv2d_geometry("explain_conv", x, w, {}, o);
  return detail::str_cat("conv2d ", x.sizes(), " * ", w.sizes(), " on ", x.device(), ": ",
                         backend_for(x.device()).choose_conv(g, o.groups, w.size(0), x.dtype(), conv_algorithm(), true).reason);
}

// ---- conv_transpose2d

Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const ConvTranspose2dOptions& o) {
  check_conv_args("conv_transpose2d", x, w, bias, o.groups);
  const int64_t N = x.size(0), Cin = x.size(1), G = o.groups;
  MG_CHECK(Cin % G == 0, "conv_transpose2d: groups=", G, " must divide the ", Cin, " input channels");
  MG_CHECK(w.size(0) == Cin, "conv_transpose2d: input of shape ", x.sizes(), " has ", Cin,
           " channels, but weight of shape ", w.sizes(), " expects ", w.size(0));
  const int64_t Cout = w.size(1) * G, kh = w.size(2), kw = w.size(3);
  if (bias.defined())
    MG_CHECK(bias.dim() == 1 && bias.size(0) == Cout, "conv_transpose2d: bias of shape ", bias.sizes(),
             " does not match the ", Cout, " output channels");
  check_pair("conv_transpose2d", "stride", o.stride, 1);
  check_pair("conv_transpose2d", "dilation", o.dilation, 1);
  check_pair("conv_transpose2d", "padding", o.padding, 0);
  check_pair("conv_transpose2d", "output_padding", o.output_padding, 0);
  MG_CHECK(o.output_padding.h < std::max(o.stride.h, o.dilation.h) &&
               o.output_padding.w < std::max(o.stride.w, o.dilation.w),
           "conv_transpose2d: output_padding (", o.output_padding.h, ", ", o.output_padding.w,
           ") must be smaller than stride or dilation");
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t Ho = (H - 1) * o.stride.h - 2 * o.padding.h + o.dilation.h * (kh - 1) + o.output_padding.h + 1;
  const int64_t Wo = (W - 1) * o.stride.w - 2 * o.padding.w + o.dilation.w * (kw - 1) + o.output_padding.w + 1;
  MG_CHECK(Ho >= 1 && Wo >= 1, "conv_transpose2d: input ", x.sizes(), " with kernel ", kh, "x", kw,
           " and padding (", o.padding.h, ", ", o.padding.w, ") gives an empty output ", Ho, "x", Wo);
  // The image side is the output; the kernel's positions over it are the input's H x W.
  Conv2dGeometry g{Cout, Ho, Wo, kh, kw, o.stride.h, o.stride.w, o.padding.h, o.padding.w,
                   o.dilation.h, o.dilation.w, H, W};
  ConvPlan p = make_plan(N, G, Cin / G, g);

  Tensor xd = x.detach().contiguous(), wd = w.detach().contiguous();
  Tensor out = empty({N, Cout, Ho, Wo}, x.options());
  conv_core(p, wd, {}, xd, {}, {}, out);
  add_bias(out, bias);
  record_conv("conv_transpose2d", p, x, w, bias, out, /*transposed=*/true);
  return out;
}

}  // namespace minigrad
