// CPU convolution: the algorithm choice (direct kernels or unfold + GEMM, from the shape and the
// running ISA level), and the entry points into the per-ISA kernels of ops/cpu/isa/.
#include <string>

#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {

template <class F>
void with_kernels(DType dt, const char* op, F&& f) {
  visit_floating(dt, op, [&](auto tag) { f(typed_kernels<typename decltype(tag)::type>(), tag); });
}

}  // namespace

ConvChoice CpuBackend::choose_conv(const Conv2dGeometry& g, int64_t groups, int64_t Cout, DType dtype,
                                   ConvAlgorithm requested, bool explain) {
  const CpuIsa isa = cpu_isa();
  const int64_t Og = Cout / groups, Cg = g.C / groups;
  // The words are built only when asked for (explain_conv, MINIGRAD_CONV_VERBOSE): conv calls skip them.
  auto level = [&] { return std::string(" [") + cpu_isa_name(isa) + "]"; };
  auto blocks = [&] {
    char b[512];
    isa_kernels(isa).describe_direct(b, sizeof b, Og, Cg, g, dtype == kFloat64);
    return std::string(b);
  };
  auto choice = [&](bool direct, auto&& words) { return explain ? ConvChoice{direct, words()} : ConvChoice{direct, {}}; };
  if (requested == ConvAlgorithm::Gemm)
    return choice(false, [] { return std::string("unfold + GEMM: forced by set_conv_algorithm(Gemm)"); });
  if (g.sh != 1 || g.sw != 1)
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: stride (", g.sh, ", ", g.sw, "); the direct kernels are stride-1 only");
    });
  if (requested == ConvAlgorithm::Direct)
    return choice(true, [&] { return "direct: forced by set_conv_algorithm(Direct)" + level() + " (" + blocks() + ")"; });
  const bool one_by_one = g.kh == 1 && g.kw == 1 && g.pad_h == 0 && g.pad_w == 0 && g.Ho == g.H && g.Wo == g.W;
  if (one_by_one)
    return choice(false, [] { return std::string("1x1 GEMM: an unpadded 1x1 conv is one GEMM on the input itself, no columns"); });
  // At the generic level the direct kernels have 16-byte vectors, while OpenBLAS runs the kernels
  // it picked for this CPU itself: measured (bench_conv --algo, MINIGRAD_CPU_ISA=generic, Zen 4),
  // unfold + GEMM was 1.5-3.5x faster on every layer but those with at most 256 products per output
  // position (LeNet's 1->6 5x5: 150; depthwise 3x3: 9), where the direct kernels were 1.4-3.3x faster.
  const int64_t products = Og * Cg * g.kh * g.kw;
  if (isa == CpuIsa::Generic && products > 256)
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: at the generic level OpenBLAS's own kernels beat the direct ones above "
                             "256 products per output position (here ", Og, " outputs x ", Cg, " inputs x ", g.kh, "x",
                             g.kw, " = ", products, ")", level());
    });
  return choice(true, [&] {
    return detail::str_cat("direct: stride 1, ", Og, " outputs and ", Cg, " inputs per group", level(), " (", blocks(), ")");
  });
}

void CpuBackend::im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) {
  with_kernels(x.dtype(), "im2col", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.im2col(cols.data_ptr<T>(), cols.stride(0), x.data_ptr<T>(), x.size(0), g);
  });
}

void CpuBackend::col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) {
  with_kernels(x.dtype(), "col2im", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.col2im(x.data_ptr<T>(), cols.data_ptr<T>(), cols.stride(0), x.size(0), g);
  });
}

void CpuBackend::conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                               int64_t groups) {
  with_kernels(x.dtype(), "conv2d_direct", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.conv_forward(y.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), x.size(0), groups, w.size(0), g);
  });
}

void CpuBackend::conv2d_direct_data(const Tensor& dx, const Tensor& gy, const Tensor& w, const Conv2dGeometry& g,
                                    int64_t groups) {
  with_kernels(gy.dtype(), "conv2d_direct_data", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.conv_data(dx.data_ptr<T>(), gy.data_ptr<T>(), w.data_ptr<T>(), gy.size(0), groups, w.size(0), g);
  });
}

void CpuBackend::conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x,
                                      const Conv2dGeometry& g, int64_t groups) {
  with_kernels(x.dtype(), "conv2d_direct_weight", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.conv_weight(dw.data_ptr<T>(), gy.data_ptr<T>(), x.data_ptr<T>(), x.size(0), groups, dw.size(0), g);
  });
}

}  // namespace minigrad::cpu
