// unfold/fold, conv2d and conv_transpose2d against direct loops; gradients; bad input; memory.
#include "helpers.h"

using namespace mgtest;

namespace {

struct ConvCfg {
  int64_t N, C, H, W, Cout, kh, kw;
  Pair2 stride, dilation;
  Padding2 padding;
  int64_t groups;
};

// The direct 7-loop convolution, in double.
std::vector<double> ref_conv(const Tensor& x, const Tensor& w, const Tensor& b, const ConvCfg& c,
                             int64_t pt, int64_t pl, int64_t Ho, int64_t Wo) {
  auto xv = vals(x), wv = vals(w);
  std::vector<double> bv = b.defined() ? vals(b) : std::vector<double>(size_t(c.Cout), 0.0);
  const int64_t Cg = c.C / c.groups, Og = c.Cout / c.groups;
  std::vector<double> out(size_t(c.N * c.Cout * Ho * Wo));
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.Cout; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double s = bv[size_t(o)];
          const int64_t g = o / Og;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t ki = 0; ki < c.kh; ++ki)
              for (int64_t kj = 0; kj < c.kw; ++kj) {
                int64_t ih = oh * c.stride.h - pt + ki * c.dilation.h, iw = ow * c.stride.w - pl + kj * c.dilation.w;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                s += xv[size_t(((n * c.C + g * Cg + ci) * c.H + ih) * c.W + iw)] *
                     wv[size_t(((o * Cg + ci) * c.kh + ki) * c.kw + kj)];
              }
          out[size_t(((n * c.Cout + o) * Ho + oh) * Wo + ow)] = s;
        }
  return out;
}

const std::vector<ConvCfg> kConvCases = {
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 0, 1},                 // plain
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1},                 // padding 1
    {2, 4, 9, 8, 6, 3, 2, {2, 1}, 1, {1, 2}, 2},       // stride, asymmetric kernel, groups
    {1, 2, 9, 9, 2, 3, 3, 1, 2, 2, 1},                 // dilation
    {2, 4, 6, 5, 4, 2, 3, 1, {1, 2}, "same", 4},       // "same" with an even kernel, depthwise
    {2, 3, 5, 5, 2, 5, 5, 1, 1, "valid", 1},           // kernel = input
    {3, 4, 5, 4, 6, 1, 1, 1, 1, 0, 2},                 // 1x1: no columns
    {2, 3, 8, 8, 4, 1, 1, 2, 1, 0, 1},                 // 1x1 with stride: columns
    {2, 3, 5, 19, 11, 3, 3, 1, 1, 1, 1},               // rows wider than a register block, 8+3 outputs
    {1, 2, 6, 7, 3, 2, 3, 1, {2, 1}, {3, 1}, 1},       // padding beyond the dilated kernel
    // 16+ output channels per group: the direct algorithm's channel-blocked kernels
    {1, 2, 4, 5, 17, 3, 3, 1, 1, 1, 1},                // 16+1 outputs, rows narrower than a block
    {1, 17, 4, 3, 2, 2, 2, 1, 1, "same", 1},           // 17 inputs: a blocked data gradient, even kernel
    // 3x3 with padding 2 and odd sizes; a 3x3 plane and kernel (one output)
    {2, 3, 6, 7, 5, 3, 3, 1, 1, 2, 1},
    {1, 2, 3, 3, 3, 3, 3, 1, 1, 0, 1},
};

// Runs body once per CPU conv algorithm at every ISA level this CPU has (and restores both).
template <class F>
void for_each_algorithm(F&& body) {
  for_each_cpu_isa([&] {
    for (ConvAlgorithm a : {ConvAlgorithm::Gemm, ConvAlgorithm::Direct, ConvAlgorithm::Auto}) {
      CAPTURE(int(a));
      set_conv_algorithm(a);
      body();
    }
  });
  set_conv_algorithm(ConvAlgorithm::Auto);
}

}  // namespace

TEST_CASE("conv2d matches the direct 7-loop conv, for every tile size and algorithm") {
  for_each_algorithm([&] {
  for (Device dev : devices())
    for (size_t ci = 0; ci < kConvCases.size(); ++ci) {
      const ConvCfg& c = kConvCases[ci];
      CAPTURE(dev);
      CAPTURE(ci);
      Tensor x = leaf({c.N, c.C, c.H, c.W}, dev), w = leaf({c.Cout, c.C / c.groups, c.kh, c.kw}, dev),
             b = leaf({c.Cout}, dev);
      Conv2dOptions o{.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups};
      int64_t pt = c.padding.h, pl = c.padding.w, th = 2 * pt, tw = 2 * pl;
      if (c.padding.mode == Padding2::Mode::Same) {
        th = c.dilation.h * (c.kh - 1);
        tw = c.dilation.w * (c.kw - 1);
        pt = th / 2;
        pl = tw / 2;
      }
      if (c.padding.mode == Padding2::Mode::Valid) pt = pl = th = tw = 0;
      const int64_t Ho = (c.H + th - c.dilation.h * (c.kh - 1) - 1) / c.stride.h + 1;
      const int64_t Wo = (c.W + tw - c.dilation.w * (c.kw - 1) - 1) / c.stride.w + 1;
      auto want = ref_conv(x, w, b, c, pt, pl, Ho, Wo);
      const size_t saved = conv_workspace_limit();
      for (size_t limit : {size_t(1), size_t(600 * 8), size_t(64) << 20}) {  // 1 image, a few, all
        CAPTURE(limit);
        set_conv_workspace_limit(limit);
        Tensor y = conv2d(x, w, b, o);
        CHECK(y.sizes() == Shape{c.N, c.Cout, Ho, Wo});
        check_close(vals(y), want, 1e-12);
        CHECK_GRAD([&](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], o); }, x, w, b);
      }
      set_conv_workspace_limit(saved);
      // without bias; and float32
      check_close(vals(conv2d(x, w, {}, o)), ref_conv(x, w, {}, c, pt, pl, Ho, Wo), 1e-12);
      check_close(vals(conv2d(x.detach().to(kFloat32), w.detach().to(kFloat32), b.detach().to(kFloat32), o)),
                  want, 1e-4);
    }
  });
}

TEST_CASE("conv2d: the direct algorithm agrees with unfold + GEMM on LeNet's layers, float32") {
  for_each_cpu_isa([&] {
  for (ConvCfg c : {ConvCfg{4, 1, 28, 28, 6, 5, 5, 1, 1, 2, 1}, ConvCfg{4, 6, 14, 14, 16, 5, 5, 1, 1, 0, 1}}) {
    Tensor x = randn({c.N, c.C, c.H, c.W}, requires_grad()), w = randn({c.Cout, c.C, c.kh, c.kw}, requires_grad());
    Tensor y[2], gx[2], gw[2], gy = randn({c.N, c.Cout, c.H + 2 * c.padding.h - 4, c.W + 2 * c.padding.w - 4});
    for (int a = 0; a < 2; ++a) {
      set_conv_algorithm(a ? ConvAlgorithm::Direct : ConvAlgorithm::Gemm);
      x.zero_grad();
      w.zero_grad();
      y[a] = conv2d(x, w, {}, {.padding = c.padding});
      sum(y[a] * gy).backward();
      gx[a] = x.grad().clone();
      gw[a] = w.grad().clone();
    }
    set_conv_algorithm(ConvAlgorithm::Auto);
    check_close(vals(y[1]), vals(y[0]), 1e-4);
    check_close(vals(gx[1]), vals(gx[0]), 1e-4);
    check_close(vals(gw[1]), vals(gw[0]), 2e-3);  // sums over 4*784 positions in float32
  }
  });
}

TEST_CASE("conv2d: the direct algorithm's channel-blocked kernels against unfold + GEMM, every kernel width") {
  // 16+ channels per group, larger than the gradient-checked cases: the output and both gradients
  // against unfold + GEMM (itself checked against the 7-loop reference and gradient-checked above),
  // in double.
  const std::vector<ConvCfg> cases = {
      {2, 18, 7, 9, 20, 3, 3, 1, 1, 1, 1},              // kernel rows of 3, 16+4 outputs
      {2, 16, 10, 11, 32, 5, 5, 1, 1, 2, 1},            // rows of 5, two output blocks
      {1, 16, 8, 9, 16, 7, 4, 1, {1, 2}, {3, 1}, 1},    // rows of 2 (kw 4), dilation, asymmetric
      {2, 34, 6, 8, 34, 3, 7, 1, 1, 2, 2},              // rows of 1 (kw 7), groups of 17
      {1, 16, 5, 6, 48, 3, 3, 1, 2, "same", 1},         // dilated "same", three output blocks
      {2, 20, 12, 12, 24, 5, 5, 1, 1, "valid", 1},      // more kernel rows than one register block
  };
  for_each_cpu_isa([&] {
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const ConvCfg& c = cases[ci];
    CAPTURE(ci);
    Tensor x = leaf({c.N, c.C, c.H, c.W}, Device::cpu()), w = leaf({c.Cout, c.C / c.groups, c.kh, c.kw}, Device::cpu());
    Conv2dOptions o{.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups};
    Tensor y[2], gx[2], gw[2];
    for (int a = 0; a < 2; ++a) {
      set_conv_algorithm(a ? ConvAlgorithm::Direct : ConvAlgorithm::Gemm);
      x.zero_grad();
      w.zero_grad();
      y[a] = conv2d(x, w, {}, o);
      Tensor gy = add(mul(arange(double(y[a].numel()), kFloat64).view(y[a].sizes()), 0.01), -1.0);
      sum(y[a] * gy).backward();
      gx[a] = x.grad().clone();
      gw[a] = w.grad().clone();
    }
    set_conv_algorithm(ConvAlgorithm::Auto);
    // two summation orders of up to a few thousand double terms, with cancellation (the sums are
    // smaller than their terms): 1e-12 failed at 1.4e-12 for some random inputs
    check_close(vals(y[1]), vals(y[0]), 1e-10);
    check_close(vals(gx[1]), vals(gx[0]), 1e-10);
    check_close(vals(gw[1]), vals(gw[0]), 1e-10);
  }
  });
}

TEST_CASE("conv2d: only the inputs that need a gradient get one") {
  Tensor x = randn({2, 3, 5, 5}, kFloat64), w = leaf({4, 3, 3, 3}, Device::cpu());
  sum(conv2d(x, w)).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.requires_grad());
  Tensor x2 = leaf({2, 3, 5, 5}, Device::cpu());
  Tensor wc = randn({4, 3, 3, 3}, kFloat64);
  CHECK_GRAD([&](const std::vector<Tensor>& in) { return conv2d(in[0], wc, {}, {.padding = 1}); }, x2);
}

TEST_CASE("conv2d: bad input") {
  Tensor x = ones({2, 3, 5, 5}), w = ones({4, 3, 3, 3});
  CHECK_ERROR(conv2d(x, ones({4, 2, 3, 3})), "conv2d", "3 channels", "[4, 2, 3, 3]", "expects 2");
  CHECK_ERROR(conv2d(x, ones({4, 3, 7, 7})), "conv2d", "larger than the padded input", "5x5");
  CHECK_ERROR(conv2d(x, w, {}, {.stride = 0}), "conv2d", "stride", "positive");
  CHECK_ERROR(conv2d(x, ones({4, 1, 3, 3}), {}, {.groups = 2}), "conv2d", "groups=2", "3 input channels");
  CHECK_ERROR(conv2d(x, w, {}, {.groups = 0}), "conv2d", "groups");
  CHECK_ERROR(conv2d(ones({3, 5, 5}), w), "conv2d", "(N, C, H, W)", "[3, 5, 5]");
  CHECK_ERROR(conv2d(x, w, ones({5})), "conv2d", "bias", "[5]");
  CHECK_ERROR(conv2d(x, ones({4, 3, 3, 3}, kFloat64)), "conv2d", "float32", "float64");
  CHECK_ERROR(conv2d(x, w, {}, {.stride = 2, .padding = "same"}), "conv2d", "same", "stride 1");
  CHECK_ERROR(conv2d(x, w, {}, {.padding = -1}), "conv2d", "padding");
  CHECK_ERROR(Padding2("full"), "padding", "full");
}

// GCC 12.2 tuning for Intel's AVX-512 cores stored one broadcast over two members of such structs
// (cmake/gcc_slp_check.cpp; CMakeLists.txt builds with -fno-tree-slp-vectorize where it does):
// {.stride = 2} arrived with padding 2 as well. The conv, unfold and pooling option structs, built
// the way users build them (the open-conv layers' options are not covered here).
TEST_CASE("option structs built with designated initializers keep their other defaults") {
  nn::ConvTranspose2d up(4, 2, 2, {.stride = 2});
  CHECK(up.options.stride.h == 2);
  CHECK(up.options.stride.w == 2);
  CHECK(up.options.padding.h == 0);
  CHECK(up.options.padding.w == 0);
  CHECK(up.options.output_padding.h == 0);
  CHECK(up.options.dilation.h == 1);
  CHECK(up.options.dilation.w == 1);
  CHECK(up.options.groups == 1);
  CHECK(up(ones({1, 4, 4, 4})).sizes() == Shape{1, 2, 8, 8});
  nn::Conv2d conv(2, 4, 3, {.stride = 2});
  CHECK(conv.options.padding.h == 0);
  CHECK(conv.options.padding.w == 0);
  CHECK(conv.options.dilation.h == 1);
  CHECK(conv.options.groups == 1);
  CHECK(conv(ones({1, 2, 7, 7})).sizes() == Shape{1, 4, 3, 3});
  CHECK(unfold(ones({1, 1, 5, 5}), {.kernel_size = 3}).sizes() == Shape{1, 9, 9});
  CHECK(unfold(ones({1, 1, 5, 5}), {.kernel_size = 2, .stride = 3}).sizes() == Shape{1, 4, 4});
  CHECK(conv_transpose2d(ones({1, 4, 3, 3}), ones({4, 2, 3, 3}), {}, {.stride = 2}).sizes() == Shape{1, 2, 7, 7});
  CHECK(max_pool2d(ones({1, 1, 6, 6}), {.kernel_size = 3}).sizes() == Shape{1, 1, 2, 2});
  CHECK(avg_pool2d(ones({1, 1, 6, 6}), {.kernel_size = 2}).sizes() == Shape{1, 1, 3, 3});
}

TEST_CASE("unfold matches direct patches, fold is its adjoint") {
  for (Device dev : devices()) {
    CAPTURE(dev);
    UnfoldOptions o{.kernel_size = {2, 3}, .stride = {1, 2}, .padding = {1, 0}, .dilation = {2, 1}};
    Tensor x = leaf({2, 3, 6, 7}, dev);
    Tensor cols = unfold(x, o);
    const int64_t Ho = (6 + 2 - 2 * 1 - 1) / 1 + 1, Wo = (7 - 3) / 2 + 1;
    REQUIRE(cols.sizes() == Shape{2, 3 * 6, Ho * Wo});
    auto xv = vals(x), cv = vals(cols);
    bool ok = true;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ki = 0; ki < 2; ++ki)
          for (int64_t kj = 0; kj < 3; ++kj)
            for (int64_t oh = 0; oh < Ho; ++oh)
              for (int64_t ow = 0; ow < Wo; ++ow) {
                int64_t ih = oh - 1 + 2 * ki, iw = ow * 2 + kj;
                double want = ih < 0 || ih >= 6 || iw >= 7 ? 0.0 : xv[size_t(((n * 3 + c) * 6 + ih) * 7 + iw)];
                double got = cv[size_t((n * 18 + (c * 2 + ki) * 3 + kj) * Ho * Wo + oh * Wo + ow)];
                ok = ok && got == want;
              }
    CHECK(ok);
    // <unfold(x), y> == <x, fold(y)>
    Tensor y = randn(cols.sizes(), kFloat64).to(dev);
    double lhs = sum(mul(unfold(x.detach(), o), y)).item();
    double rhs = sum(mul(x.detach(), fold(y, {6, 7}, o))).item();
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return unfold(in[0], o); }, x);
    Tensor yl = leaf(cols.sizes(), dev);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return fold(in[0], {6, 7}, o); }, yl);
  }
  CHECK_ERROR(unfold(ones({1, 1, 2, 2}), {.kernel_size = 3}), "unfold", "larger than the padded input");
  CHECK_ERROR(unfold(ones({1, 1, 4, 4}), {.kernel_size = 2, .stride = 0}), "unfold", "stride");
  CHECK_ERROR(unfold(ones({4, 4}), {.kernel_size = 2}), "unfold", "(N, C, H, W)");
  CHECK_ERROR(fold(ones({1, 5, 9}), {4, 4}, {.kernel_size = 2}), "fold", "multiple of the kernel");
  CHECK_ERROR(fold(ones({1, 4, 8}), {4, 4}, {.kernel_size = 2}), "fold", "8 columns", "9 positions");
}

TEST_CASE("conv_transpose2d matches a direct scatter and is conv2d's data gradient") {
  struct Cfg { int64_t N, Cin, H, W, Cog, kh, kw; Pair2 s, p, op, d; int64_t g; };
  const std::vector<Cfg> cases = {
      {2, 4, 3, 4, 3, 3, 3, 2, 1, 1, 1, 2},
      {1, 2, 4, 3, 2, 2, 3, {1, 2}, 0, {0, 1}, 1, 1},
      {2, 3, 3, 3, 2, 3, 2, 1, {1, 0}, 0, 2, 1},
      {2, 4, 5, 6, 3, 3, 3, 1, 1, 0, 1, 2},  // stride 1, groups: the direct algorithm's case
  };
  for_each_algorithm([&] {
  for (Device dev : devices())
    for (const Cfg& c : cases) {
      CAPTURE(dev);
      ConvTranspose2dOptions o{.stride = c.s, .padding = c.p, .output_padding = c.op, .dilation = c.d, .groups = c.g};
      Tensor x = leaf({c.N, c.Cin, c.H, c.W}, dev), w = leaf({c.Cin, c.Cog, c.kh, c.kw}, dev), b = leaf({c.Cog * c.g}, dev);
      Tensor y = conv_transpose2d(x, w, b, o);
      const int64_t Ho = (c.H - 1) * c.s.h - 2 * c.p.h + c.d.h * (c.kh - 1) + c.op.h + 1;
      const int64_t Wo = (c.W - 1) * c.s.w - 2 * c.p.w + c.d.w * (c.kw - 1) + c.op.w + 1;
      const int64_t Cout = c.Cog * c.g, Cig = c.Cin / c.g;
      REQUIRE(y.sizes() == Shape{c.N, Cout, Ho, Wo});
      auto xv = vals(x), wv = vals(w), bv = vals(b);
      std::vector<double> want(size_t(c.N * Cout * Ho * Wo));
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t o2 = 0; o2 < Cout; ++o2)
          for (int64_t i = 0; i < Ho * Wo; ++i) want[size_t((n * Cout + o2) * Ho * Wo + i)] = bv[size_t(o2)];
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t ci = 0; ci < c.Cin; ++ci)
          for (int64_t co = 0; co < c.Cog; ++co)
            for (int64_t ih = 0; ih < c.H; ++ih)
              for (int64_t iw = 0; iw < c.W; ++iw)
                for (int64_t ki = 0; ki < c.kh; ++ki)
                  for (int64_t kj = 0; kj < c.kw; ++kj) {
                    int64_t oh = ih * c.s.h - c.p.h + ki * c.d.h, ow = iw * c.s.w - c.p.w + kj * c.d.w;
                    if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                    int64_t oc = (ci / Cig) * c.Cog + co;
                    want[size_t(((n * Cout + oc) * Ho + oh) * Wo + ow)] +=
                        xv[size_t(((n * c.Cin + ci) * c.H + ih) * c.W + iw)] * wv[size_t(((ci * c.Cog + co) * c.kh + ki) * c.kw + kj)];
                  }
      check_close(vals(y), want, 1e-12);
      CHECK_GRAD([&](const std::vector<Tensor>& in) { return conv_transpose2d(in[0], in[1], in[2], o); }, x, w, b);
    }
  });
  CHECK_ERROR(conv_transpose2d(ones({1, 3, 4, 4}), ones({2, 2, 3, 3})), "conv_transpose2d", "3 channels", "expects 2");
  CHECK_ERROR(conv_transpose2d(ones({1, 2, 4, 4}), ones({2, 2, 3, 3}), {}, {.stride = 2, .output_padding = 2}),
              "conv_transpose2d", "output_padding");
  CHECK_ERROR(conv_transpose2d(ones({1, 2, 1, 1}), ones({2, 2, 2, 2}), {}, {.padding = 2}), "conv_transpose2d", "empty output");
}

TEST_CASE("a conv training step's peak memory is inputs + outputs + params + workspace") {
  // 16 images 32->32 channels 3x3 on 24x24: the full column matrix would be 16*288*576*4 = 10.6 MB;
  // with a 1 MiB workspace the step must stay far below that.
  const size_t saved = conv_workspace_limit();
  set_conv_workspace_limit(size_t(1) << 20);
  Tensor x = randn({16, 32, 24, 24}), w = randn({32, 32, 3, 3}, requires_grad()), b = zeros({32}, requires_grad());
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base = memory_stats().current_bytes;
  Tensor y = conv2d(x, w, b, {.padding = 1});
  sum(y).backward();
  const int64_t peak = memory_stats().peak_bytes - base;
  const int64_t io = 2 * x.numel() * 4 /* y and its gradient */ + 2 * (w.numel() + b.numel()) * 4;
  const int64_t workspace = int64_t(1) << 20;
  CHECK(peak <= io + workspace + 64 * 1024);
  const int64_t full_cols = 16LL * 288 * 576 * 4;
  CHECK(peak < io + full_cols / 4);
  // The direct algorithm allocates no columns at all: only the outputs and gradients.
  set_conv_algorithm(ConvAlgorithm::Direct);
  w.zero_grad();
  b.zero_grad();
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base2 = memory_stats().current_bytes;
  Tensor y2 = conv2d(x, w, b, {.padding = 1});
  sum(y2).backward();
  CHECK(memory_stats().peak_bytes - base2 <= io + 64 * 1024);
  set_conv_algorithm(ConvAlgorithm::Auto);
  set_conv_workspace_limit(saved);
}
