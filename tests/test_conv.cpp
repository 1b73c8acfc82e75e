// conv2d beyond the op table (tests/test_ops.cpp): the two CPU algorithms against each other on
// larger layers, gradients only where needed, option structs, memory.
#include "helpers.h"

using namespace mgtest;

namespace {

struct ConvCfg {
  int64_t N, C, H, W, Cout, kh, kw;
  Pair2 stride, dilation;
  Padding2 padding;
  int64_t groups;
};

}  // namespace

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
