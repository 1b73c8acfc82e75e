// The per-ISA CPU kernels: the dispatcher's choice, the refusals, every level's conv kernels
// against each other in float32, and explain_conv.
#include <strings.h>

#include <fstream>
#include <sstream>

#include "helpers.h"

using namespace mgtest;

namespace {

// The level the CPU's flags in /proc/cpuinfo call for, read independently of the dispatcher.
CpuIsa expected_from_cpuinfo() {
#if defined(__x86_64__)
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0) break;
  std::istringstream words(line.substr(line.find(':') + 1));
  std::vector<std::string> flags;
  for (std::string w; words >> w;) flags.push_back(w);
  auto has = [&](const char* name) { return std::find(flags.begin(), flags.end(), name) != flags.end(); };
  if (has("avx512f") && has("avx512bw") && has("avx512dq") && has("avx512vl") && has("fma")) return CpuIsa::Avx512;
  if (has("avx2") && has("fma")) return CpuIsa::Avx2;
#endif
  return CpuIsa::Generic;
}

struct Case {
  int64_t N, C, H, W, Cout, kh, kw, pad, dil, groups;
  int64_t sh = 1, sw = 1;  // stride: the polyphase path
};

}  // namespace

TEST_CASE("cpu isa: the dispatcher picks the best level the CPU has") {
  CHECK(cpu_isa_best() == expected_from_cpuinfo());
  const std::vector<CpuIsa> levels = cpu_isa_levels();
  REQUIRE(!levels.empty());
  CHECK(levels.front() == CpuIsa::Generic);
  CHECK(levels.back() == cpu_isa_best());
  const char* env = std::getenv("MINIGRAD_CPU_ISA");
  if (env && *env) CHECK(cpu_isa() == parse_cpu_isa(env));  // the variable forces the level
  else CHECK(cpu_isa() == cpu_isa_best());
  MESSAGE("CPU: ", cpu_model_name(), "; running ", std::string(cpu_isa_name(cpu_isa())), ", best ",
          std::string(cpu_isa_name(cpu_isa_best())));
}

// OpenBLAS 0.3.21 gives a CPU model newer than it knows its SSE3 kernels (an Emerald Rapids Xeon,
// model 207, got "Prescott": 4.6x slower sgemm); minigrad has it choose again from the features.
TEST_CASE("cpu isa: OpenBLAS runs kernels of the CPU's vector level unless OPENBLAS_CORETYPE names others") {
  const std::string core = blas_kernel_name();
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  MESSAGE("OpenBLAS kernels: ", core, forced ? " (OPENBLAS_CORETYPE=" + std::string(forced) + ")" : std::string());
  if (forced) {
    CHECK(strcasecmp(core.c_str(), forced) == 0);  // the user's choice stands
    return;
  }
  const std::vector<std::string> avx512 = {"SkylakeX", "Cooperlake", "SapphireRapids"};
  std::vector<std::string> avx2 = {"Haswell", "Zen", "Excavator"};
  avx2.insert(avx2.end(), avx512.begin(), avx512.end());
  auto in = [&](const std::vector<std::string>& set) { return std::find(set.begin(), set.end(), core) != set.end(); };
  switch (expected_from_cpuinfo()) {
    case CpuIsa::Avx512: CHECK_MESSAGE(in(avx512), core); break;
    case CpuIsa::Avx2: CHECK_MESSAGE(in(avx2), core); break;
    case CpuIsa::Generic: break;  // whatever OpenBLAS found (SSE, NEON, ...)
  }
  // and its GEMMs still give the right numbers after the switch
  Tensor a = randn({67, 130}), b = randn({130, 45});
  check_close(vals(matmul(a, b)), ref_mm(vals(a), vals(b), 67, 130, 45), 1e-4);
}

TEST_CASE("cpu isa: names parse; unknown names and levels the CPU lacks are refused") {
  for (CpuIsa isa : {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512}) CHECK(parse_cpu_isa(cpu_isa_name(isa)) == isa);
  CHECK_THROWS_WITH_AS(parse_cpu_isa("avx9000"), doctest::Contains("unknown CPU level \"avx9000\""), Error);
  const CpuIsa saved = cpu_isa();
  detail::pretend_cpu_isa_best(CpuIsa::Generic);  // a CPU with neither AVX2 nor AVX-512
  CHECK(cpu_isa() == CpuIsa::Generic);
  CHECK(cpu_isa_levels() == std::vector<CpuIsa>{CpuIsa::Generic});
  CHECK_THROWS_WITH_AS(set_cpu_isa(CpuIsa::Avx2), doctest::Contains("\"avx2\" is not supported here"), Error);
  CHECK_THROWS_WITH_AS(set_cpu_isa(CpuIsa::Avx512), doctest::Contains("the best is \"generic\""), Error);
  detail::restore_cpu_isa_best();
  set_cpu_isa(saved);
  CHECK(cpu_isa() == saved);
}

TEST_CASE("cpu isa: every level's direct conv kernels agree with unfold + GEMM in float32") {
  // Shapes for every register block: small groups (1..15 outputs, blocks of every width), two and
  // one vectors of channels with tails, planes swept whole or row by row, weight-gradient rows of
  // 5, 3, 2 and 1 taps, one and two vectors of channels per weight block, dilation, groups, planes
  // narrower than a block.
  const std::vector<Case> cases = {
      {3, 1, 28, 28, 6, 5, 5, 2, 1, 1},   {2, 6, 14, 14, 16, 5, 5, 0, 1, 1},  {2, 3, 11, 13, 35, 3, 3, 1, 1, 1},
      {2, 40, 9, 7, 13, 3, 3, 1, 1, 1},   {2, 33, 6, 6, 64, 3, 3, 1, 1, 1},   {2, 64, 5, 4, 48, 2, 2, 0, 1, 1},
      {2, 24, 8, 8, 24, 1, 7, 0, 1, 1},   {2, 32, 7, 9, 32, 3, 3, 2, 2, 2},   {3, 16, 10, 10, 16, 3, 3, 1, 1, 16},
      {1, 20, 3, 3, 70, 3, 3, 1, 1, 1},   {2, 9, 12, 5, 7, 5, 1, 2, 1, 1},
      // channel blocks swept row by row: 8-wide rows (a block of 8 or two of 4 per row), 3-wide
      // rows whose block of 4 ends in the padding column
      {2, 20, 8, 8, 48, 3, 3, 1, 1, 1},   {2, 10, 6, 3, 48, 3, 3, 1, 1, 1},
      // rows of a whole vector of positions and a tail, to and from the [position][channel]
      // layouts (transposed in registers): partial last vectors of channels, one and two per block
      {2, 8, 6, 18, 40, 3, 3, 1, 1, 1},   {1, 4, 3, 17, 64, 3, 3, 1, 1, 1},
      // the narrower position block (8) where rows are whole multiples of it: one vector of
      // channels on 8x8 planes, two on 16-wide rows (forward and data gradient)
      {2, 5, 8, 8, 16, 3, 3, 1, 1, 1},    {1, 32, 6, 16, 32, 3, 3, 1, 1, 1},
      // and the 12-position block for one vector of channels on rows of 9-12 (LeNet conv2's 10x10)
      {2, 6, 10, 10, 16, 3, 3, 1, 1, 1},  {2, 16, 14, 14, 20, 5, 5, 0, 1, 1},
      // strided, as stride-1 convs on phase planes: odd and even sizes, both block kinds, uneven
      // strides, stride 3, a kernel of 2 taps per axis at stride 2, groups
      {2, 20, 11, 9, 24, 3, 3, 1, 1, 1, 2, 2}, {2, 7, 8, 8, 5, 3, 3, 1, 1, 1, 2, 2},
      {2, 16, 9, 10, 32, 3, 3, 0, 1, 1, 1, 2}, {1, 6, 13, 11, 18, 5, 5, 2, 1, 1, 3, 3},
      {2, 8, 9, 9, 16, 4, 4, 1, 1, 1, 2, 2},   {2, 12, 10, 7, 12, 3, 3, 1, 1, 3, 2, 2},
  };
  const CpuIsa saved = cpu_isa();
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    CAPTURE(ci);
    manual_seed(int64_t(ci));
    Tensor x = randn({c.N, c.C, c.H, c.W}, requires_grad()), w = randn({c.Cout, c.C / c.groups, c.kh, c.kw}, requires_grad());
    const Conv2dOptions o{.stride = {c.sh, c.sw}, .padding = c.pad, .dilation = c.dil, .groups = c.groups};
    Tensor gy;
    auto run = [&](ConvAlgorithm a) {
      set_conv_algorithm(a);
      x.zero_grad();
      w.zero_grad();
      Tensor y = conv2d(x, w, {}, o);
      if (!gy.defined()) gy = randn(y.sizes());
      sum(y * gy).backward();
      return std::vector<Tensor>{y.detach(), x.grad().clone(), w.grad().clone()};
    };
    set_cpu_isa(CpuIsa::Generic);
    const std::vector<Tensor> want = run(ConvAlgorithm::Gemm);
    for (CpuIsa isa : cpu_isa_levels()) {
      const std::string level = cpu_isa_name(isa);
      CAPTURE(level);
      set_cpu_isa(isa);
      const std::vector<Tensor> got = run(ConvAlgorithm::Direct);
      for (int k = 0; k < 3; ++k) {
        CAPTURE(k);
        // float32 sums of up to a few thousand products, in another order: relative to the scale
        const double scale = std::max(1.0, max(abs(want[size_t(k)])).item<double>());
        CHECK(max(abs(got[size_t(k)] - want[size_t(k)])).item<double>() <= 2e-5 * scale * std::sqrt(double(c.N * c.H * c.W)));
      }
    }
  }
  set_conv_algorithm(ConvAlgorithm::Auto);
  set_cpu_isa(saved);
}

TEST_CASE("explain_conv says which algorithm runs and why") {
  Tensor x = randn({2, 32, 8, 8}), w3 = randn({64, 32, 3, 3}), w1 = randn({64, 32, 1, 1});
  const std::string d = explain_conv(x, w3, {.padding = 1});
  if (cpu_isa() != CpuIsa::Generic) CHECK(d.find("on cpu: direct: stride 1, 64 outputs and 32 inputs per group") != std::string::npos);
  CHECK(d.find(std::string("[") + cpu_isa_name(cpu_isa()) + "]") != std::string::npos);
  CHECK(d.find("[2, 32, 8, 8]") != std::string::npos);
  CHECK(explain_conv(x, w3, {.stride = 2, .padding = 1}).find("unfold + GEMM: stride (2, 2); the polyphase direct path") != std::string::npos);
  CHECK(explain_conv(x, w1, {.stride = 2}).find("unfold + GEMM: stride (2, 2) at least the kernel (1x1)") != std::string::npos);
  CHECK(explain_conv(x, w3, {.stride = 2, .padding = 2, .dilation = 2}).find("dilation 1 only") != std::string::npos);
  // 1x1: the direct kernels up to 128 inputs per group (above the generic level), one GEMM beyond
  if (cpu_isa() != CpuIsa::Generic) CHECK(explain_conv(x, w1).find("on cpu: direct: stride 1") != std::string::npos);
  else CHECK(explain_conv(x, w1).find("1x1 GEMM") != std::string::npos);
  CHECK(explain_conv(randn({2, 256, 4, 4}), randn({64, 256, 1, 1})).find("1x1 GEMM") != std::string::npos);
  // the generic level leaves channel-heavy layers to OpenBLAS, keeps the direct kernels for tiny ones
  const CpuIsa saved = cpu_isa();
  set_cpu_isa(CpuIsa::Generic);
  CHECK(explain_conv(x, w3, {.padding = 1}).find("unfold + GEMM: at the generic level") != std::string::npos);
  CHECK(explain_conv(x, randn({32, 1, 3, 3}), {.padding = 1, .groups = 32}).find("on cpu: direct: stride 1") != std::string::npos);
  set_cpu_isa(saved);
  set_conv_algorithm(ConvAlgorithm::Gemm);
  CHECK(explain_conv(x, w3, {.padding = 1}).find("forced by set_conv_algorithm(Gemm)") != std::string::npos);
  set_conv_algorithm(ConvAlgorithm::Direct);
  CHECK(explain_conv(x, w1).find("direct: forced") != std::string::npos);
  CHECK(explain_conv(x, w3, {.stride = 2, .padding = 1}).find("direct, polyphase: forced") != std::string::npos);
  CHECK(explain_conv(x, w1, {.stride = 2}).find("unfold + GEMM: stride (2, 2) at least the kernel") != std::string::npos);
  set_conv_algorithm(ConvAlgorithm::Auto);
  CHECK_THROWS_WITH_AS(explain_conv(x, randn({64, 16, 3, 3})), doctest::Contains("explain_conv: input of shape"), Error);
}

TEST_CASE("cpu isa: conv gradients are the same bit for bit from run to run (dynamic scheduling)") {
  // The weight gradients sum images in chunks handed out dynamically; the chunk sums are added
  // in a fixed order, so which thread ran which chunk must not show in the result.
  for_each_cpu_isa([&] {
    for (int64_t cout : {int64_t(6), int64_t(40)}) {  // small-group and channel-blocked kernels
      CAPTURE(cout);
      manual_seed(3);
      Tensor x = randn({9, 5, 12, 12}, requires_grad()), w = randn({cout, 5, 3, 3}, requires_grad());
      Tensor gy = randn({9, cout, 12, 12});
      std::vector<float> first;
      for (int rep = 0; rep < 4; ++rep) {
        w.zero_grad();
        set_conv_algorithm(ConvAlgorithm::Direct);
        sum(conv2d(x, w, {}, {.padding = 1}) * gy).backward();
        set_conv_algorithm(ConvAlgorithm::Auto);
        std::vector<float> g = w.grad().to_vector<float>();
        if (rep == 0) first = g;
        else CHECK(g == first);
      }
    }
  });
}

TEST_CASE("cpu isa: every level's memory-bound kernels against naive loops (sums, batch norm, arithmetic, optimizers)") {
  // lengths around the vector widths (4, 8, 16 floats), the 4-vector unroll and the 1024-element
  // sum blocks, and one spread over both threads
  const int64_t lengths[] = {1, 3, 8, 17, 64, 65, 1023, 1024, 1025, 3001, 70001};
  for_each_cpu_isa([&] {
    for (DType dt : {kFloat32, kFloat64}) {
      CAPTURE(dt);
      const bool f32 = dt == kFloat32;
      const double eps = f32 ? 1.2e-7 : 2.3e-16;  // a unit roundoff of dt
      for (int64_t n : lengths) {
        CAPTURE(n);
        Tensor x = randn({n}, dt), y = add(rand({n}, dt), 0.5);  // y in [0.5, 1.5): a safe divisor
        const auto xv = vals(x), yv = vals(y);
        // sums: within a few roundoffs of the sum of magnitudes (the blocks sum in dt)
        double ref = 0, mag = 0;
        for (double v : xv) ref += v, mag += std::abs(v);
        CHECK(std::abs(sum(x).item<double>() - ref) <= 64 * eps * mag);
        CHECK(std::abs(mean(x).item<double>() - ref / double(n)) <= 64 * eps * mag / double(n));
        // add, sub, mul, div are rounded once: the same bits as the operation in dt; with a
        // scalar on either side (a broadcast run), in place, and along a strided (transposed) view
        auto exact = [&](const Tensor& got, auto op) {
          const auto gv = vals(got);
          bool ok = true;
          for (size_t i = 0; i < gv.size(); ++i)
            ok = ok && (f32 ? gv[i] == double(op(float(xv[i]), float(yv[i]))) : gv[i] == op(xv[i], yv[i]));
          return ok;
        };
        CHECK(exact(add(x, y), [](auto a, auto b) { return a + b; }));
        CHECK(exact(sub(x, y), [](auto a, auto b) { return a - b; }));
        CHECK(exact(mul(x, y), [](auto a, auto b) { return a * b; }));
        CHECK(exact(div(x, y), [](auto a, auto b) { return a / b; }));
        CHECK(exact(mul(x, 0.375), [](auto a, auto) { return a * decltype(a)(0.375); }));
        CHECK(exact(sub(full({1}, 2.5, TensorOptions(dt)), y), [](auto, auto b) { return decltype(b)(2.5) - b; }));
        CHECK(exact(Tensor(x.clone()).div_(y), [](auto a, auto b) { return a / b; }));
        // a + alpha*b: one rounding (FMA) or two, either way within a roundoff of each term
        const auto av = vals(add(x, y, -0.7));
        bool close = true;
        for (size_t i = 0; i < av.size(); ++i)
          close = close && std::abs(av[i] - (xv[i] - 0.7 * yv[i])) <= 2 * eps * (std::abs(xv[i]) + 0.7 * yv[i]);
        CHECK(close);
        if (n > 1) {
          const int64_t r = n / 2 * 2 == n ? 2 : 1;  // a (r, n/r) matrix and its transpose
          Tensor xt = x.view({r, n / r}).t(), yt = y.view({r, n / r}).t();
          const auto st = vals(add(xt, yt)), xs = vals(xt), ys = vals(yt);
          bool ok = true;
          for (size_t i = 0; i < st.size(); ++i)
            ok = ok && (f32 ? st[i] == double(float(xs[i]) + float(ys[i])) : st[i] == xs[i] + ys[i]);
          CHECK(ok);
        }
        // SGD with momentum, dampening, weight decay (nesterov and not), then Adam and AdamW,
        // two steps each (the first fills the momentum buffer), against the update in double
        for (bool nesterov : {false, true}) {
          Tensor p = x.clone().requires_grad_();
          optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .dampening = nesterov ? 0.0 : 0.25, .weight_decay = 0.01,
                               .nesterov = nesterov});
          std::vector<double> pv = xv, buf(size_t(n), 0);
          for (int step = 0; step < 2; ++step) {
            p.set_grad(y);
            opt.step();
            for (size_t i = 0; i < pv.size(); ++i) {
              const double d = yv[i] + 0.01 * pv[i];
              buf[i] = step == 0 ? d : 0.9 * buf[i] + (nesterov ? 1.0 : 0.75) * d;
              pv[i] -= 0.1 * (nesterov ? d + 0.9 * buf[i] : buf[i]);
            }
          }
          check_close(vals(p), pv, f32 ? 1e-5 : 1e-13);
        }
        for (bool decoupled : {false, true}) {
          Tensor p = x.clone().requires_grad_();
          std::unique_ptr<optim::Optimizer> opt;
          optim::AdamWOptions wo;
          wo.lr = 0.01;
          if (decoupled) opt = std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, wo);
          else opt = std::make_unique<optim::Adam>(std::vector<Tensor>{p}, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
          const double wd = decoupled ? wo.weight_decay : 0.1;
          std::vector<double> pv = xv, m(size_t(n), 0), v(size_t(n), 0);
          for (int t = 1; t <= 2; ++t) {
            p.set_grad(y);
            opt->step();
            for (size_t i = 0; i < pv.size(); ++i) {
              double g = yv[i];
              if (decoupled) pv[i] *= 1 - 0.01 * wd;
              else g += wd * pv[i];
              m[i] = 0.9 * m[i] + 0.1 * g;
              v[i] = 0.999 * v[i] + 0.001 * g * g;
              const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
              pv[i] -= 0.01 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
            }
          }
          check_close(vals(p), pv, f32 ? 1e-5 : 1e-12);
        }
      }
      // per-channel sums and batch norm over planes of odd sizes (tails in every row) and of a
      // multiple of every vector width; forward against the two-pass statistics in double,
      // backward by finite differences in float64
      for (Shape s : {Shape{3, 5, 7, 9}, Shape{2, 3, 32, 32}}) {
        CAPTURE(s);
        const int64_t N = s[0], C = s[1], S = s[2] * s[3];
        Tensor x = add(mul(randn(s, dt), 3.0), 5.0);  // an offset mean: the variance's two passes matter
        const auto xv = vals(x);
        std::vector<double> mean(size_t(C), 0), var(size_t(C), 0);
        for (int64_t i = 0; i < N * C * S; ++i) mean[size_t((i / S) % C)] += xv[size_t(i)] / double(N * S);
        for (int64_t i = 0; i < N * C * S; ++i) {
          const double d = xv[size_t(i)] - mean[size_t((i / S) % C)];
          var[size_t((i / S) % C)] += d * d / double(N * S);
        }
        std::vector<double> sums;
        for (double m : mean) sums.push_back(m * double(N * S));
        check_close(vals(sum(x, {0, 2, 3})), sums, f32 ? 1e-5 : 1e-12);
        Tensor y = batch_norm(x, {}, {}, {}, {}, /*training=*/true);
        std::vector<double> want;
        for (int64_t i = 0; i < N * C * S; ++i) {
          const size_t c = size_t((i / S) % C);
          want.push_back((xv[size_t(i)] - mean[c]) / std::sqrt(var[c] + 1e-5));
        }
        check_close(vals(y), want, f32 ? 1e-4 : 1e-11);
      }
    }
    Tensor x = leaf({2, 3, 5, 7}, Device::cpu()), w = leaf({3}, Device::cpu(), 0.5, 1.5), b = leaf({3}, Device::cpu());
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, in[1], in[2], true); }, x, w, b);
  });
}

TEST_CASE("cpu isa: every level's 2x2 max pooling against naive windows (ties, NaN, odd sizes)") {
  for_each_cpu_isa([&] {
    for (DType dt : {kFloat32, kFloat64})
      // output widths around every vector length (2 to 16 lanes), odd rows and columns left over
      for (int64_t W : {2, 5, 8, 9, 16, 17, 31, 32, 33, 34, 65}) {
        CAPTURE(dt);
        CAPTURE(W);
        const int64_t N = 2, C = 3, H = 7, Ho = H / 2, Wo = W / 2;
        // values on a coarse grid (many ties, as after relu), with NaNs sprinkled in
        std::vector<double> xs(size_t(N * C * H * W));
        for (size_t i = 0; i < xs.size(); ++i) {
          xs[i] = double(int((i * 7919) % 11) - 5) / 2;
          if (xs[i] < 0) xs[i] = 0;
          if (i % 37 == 5) xs[i] = std::nan("");
        }
        Tensor x = from_vector<double>(xs).view({N, C, H, W}).to(dt).requires_grad_(true);
        Tensor xi = x.detach().requires_grad_(true);
        Tensor y = max_pool2d(x, {.kernel_size = 2});                             // uint8 taps
        auto [yi, idx] = max_pool2d_with_indices(xi, {.kernel_size = 2});       // int64 places
        Tensor gy = randn({N, C, Ho, Wo}, dt);
        y.backward(gy);
        yi.backward(gy);
        const auto yv = vals(y), yiv = vals(yi), iv = vals(idx), gv = vals(gy), gx = vals(x.grad()), gxi = vals(xi.grad());
        std::vector<double> want_gx(xs.size(), 0);
        bool values = true, places = true;
        for (int64_t p = 0; p < N * C; ++p)
          for (int64_t oh = 0; oh < Ho; ++oh)
            for (int64_t ow = 0; ow < Wo; ++ow) {
              // the first tap, then a later one that is greater or NaN over a non-NaN best
              int64_t bi = p * H * W + 2 * oh * W + 2 * ow;
              for (int64_t t = 1; t < 4; ++t) {
                const int64_t at = p * H * W + (2 * oh + t / 2) * W + 2 * ow + t % 2;
                const double v = xs[size_t(at)], b = xs[size_t(bi)];
                if (v > b || (std::isnan(v) && !std::isnan(b))) bi = at;
              }
              const size_t o = size_t((p * Ho + oh) * Wo + ow);
              const double want = xs[size_t(bi)];
              values = values && (std::isnan(want) ? std::isnan(yv[o]) && std::isnan(yiv[o]) : yv[o] == want && yiv[o] == want);
              places = places && int64_t(iv[o]) == bi - p * H * W;
              want_gx[size_t(bi)] += gv[o];
            }
        CHECK(values);
        CHECK(places);
        CHECK(gx == want_gx);  // each element written once: exact, zeros included
        CHECK(gxi == want_gx);
      }
  });
}

TEST_CASE("cpu isa: every level's exp, log, tanh, sigmoid, gelu and pow within a few ulp of libm") {
  // values over each function's range, special values, and a length with a ragged tail
  std::vector<double> xs;
  for (int i = 0; i < 997; ++i) xs.push_back(-30.0 + 60.0 * i / 996.0);
  for (double v : {0.0, -0.0, 1e-30, -1e-30, 1e-310, 88.0, 89.0, -104.0, 700.0, 710.0, -745.0, 1e30, -1e30})
    xs.push_back(v);
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (double v : {inf, -inf, nan}) xs.push_back(v);
  auto ref_gelu = [](double v) { return v * 0.5 * (1 + std::erf(v * M_SQRT1_2)); };
  auto ref_sigmoid = [](double v) { return v >= 0 ? 1 / (1 + std::exp(-v)) : std::exp(v) / (1 + std::exp(v)); };
  for_each_cpu_isa([&] {
    for (DType dt : {kFloat32, kFloat64}) {
      CAPTURE(dt);
      const bool f32 = dt == kFloat32;
      const double ulp = f32 ? 1.2e-7 : 2.3e-16, tiny = f32 ? 1e-37 : 1e-300;
      Tensor x = from_vector<double>(xs).to(dt);
      const auto xv = vals(x);  // the inputs as dt holds them
      // got is within 4 ulp of want (computed in double from the same input), or both are the same
      // non-finite value; results of a float that overflow or underflow compare as such. gelu's
      // 1 + erf(x/sqrt 2) cancels for negative x in any precision (PyTorch's formula too): its
      // error is measured against |x|.
      auto agree = [&](const Tensor& got, auto ref, const std::string& name, bool against_x = false) {
        const auto gv = vals(got);
        int bad = 0;
        for (size_t i = 0; i < gv.size(); ++i) {
          double want = ref(xv[i]);
          if (f32) want = double(float(want));
          const double scale = against_x ? std::max(std::abs(want), std::abs(xv[i])) : std::abs(want);
          const bool ok = std::isnan(want) ? std::isnan(gv[i])
                          : std::isinf(want) ? gv[i] == want
                                             : std::abs(gv[i] - want) <= 4 * ulp * scale + tiny;
          if (!ok && bad++ < 3) MESSAGE(name, "(", xv[i], ") = ", gv[i], ", want ", want);
        }
        CHECK_MESSAGE(bad == 0, name);
      };
      agree(exp(x), [](double v) { return std::exp(v); }, "exp");
      agree(log(abs(x)), [](double v) { return std::log(std::abs(v)); }, "log");
      agree(tanh(x), [](double v) { return std::tanh(v); }, "tanh");
      agree(sigmoid(x), ref_sigmoid, "sigmoid");
      agree(gelu(x), ref_gelu, "gelu", /*against_x=*/true);
      agree(pow(abs(x), 1.7), [](double v) { return std::pow(std::abs(v), 1.7); }, "pow");
      // a strided input runs the same function: the same bits as its contiguous copy
      Tensor m = randn({40, 33}, dt), mt = m.t();
      CHECK(vals(tanh(mt)) == vals(tanh(mt.contiguous())));
      CHECK(vals(gelu(mt)) == vals(gelu(mt.contiguous())));
      Tensor st = mt.detach().requires_grad_(true), ct = mt.contiguous().detach().requires_grad_(true);
      CHECK_FALSE(st.is_contiguous());
      Tensor gt = randn({33, 40}, dt);
      gelu(st).backward(gt);
      gelu(ct).backward(gt);
      CHECK(vals(st.grad()) == vals(ct.grad()));
      // gelu's and pow's gradients against their derivatives
      Tensor a = mul(randn({1001}, dt), 3.0).requires_grad_(true), b = add(rand({1001}, dt), 0.1).requires_grad_(true);
      Tensor ga = randn({1001}, dt);
      gelu(a).backward(ga);
      pow(b, 2.5).backward(ga);
      const auto av = vals(a), bv = vals(b), gv = vals(ga), da = vals(a.grad()), db = vals(b.grad());
      bool ok = true;
      for (size_t i = 0; i < av.size(); ++i) {
        const double v = av[i], pdf = std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
        const double want_a = gv[i] * (0.5 * (1 + std::erf(v * M_SQRT1_2)) + v * pdf);
        const double want_b = gv[i] * 2.5 * std::pow(bv[i], 1.5);
        ok = ok && std::abs(da[i] - want_a) <= 16 * ulp * (std::abs(gv[i]) * (1 + std::abs(v))) &&
             std::abs(db[i] - want_b) <= 16 * ulp * std::abs(want_b) + tiny;
      }
      CHECK(ok);
    }
  });
}

TEST_CASE("cpu isa: every level's softmax and log_softmax rows against a double reference") {
  for_each_cpu_isa([&] {
    for (DType dt : {kFloat32, kFloat64})
      for (int64_t n : {1, 3, 10, 16, 17, 100, 1001}) {
        CAPTURE(dt);
        CAPTURE(n);
        const double tol = dt == kFloat32 ? 2e-6 : 1e-14;
        // large offsets (the max is subtracted first), a -inf entry, 3 rows
        Tensor x = add(mul(randn({3, n}, dt), 4.0), 500.0);
        if (n > 2) x = where(eq(arange(0, 3 * n, 1, TensorOptions(kInt64)).view({3, n}), full({1}, 1, TensorOptions(kInt64))),
                             full({1}, -std::numeric_limits<double>::infinity(), TensorOptions(dt)), x);
        Tensor xs = x.detach().requires_grad_(true), xl = x.detach().requires_grad_(true);
        Tensor s = softmax(xs, 1), l = log_softmax(xl, 1);
        Tensor g = randn({3, n}, dt);
        s.backward(g);
        l.backward(g);
        const auto xv = vals(x), sv = vals(s), lv = vals(l), gv = vals(g), gs = vals(xs.grad()), gl = vals(xl.grad());
        bool ok = true;
        for (int64_t r = 0; r < 3; ++r) {
          double mx = -std::numeric_limits<double>::infinity(), sum = 0, sg = 0, sgy = 0;
          for (int64_t i = 0; i < n; ++i) mx = std::max(mx, xv[size_t(r * n + i)]);
          for (int64_t i = 0; i < n; ++i) sum += std::exp(xv[size_t(r * n + i)] - mx);
          for (int64_t i = 0; i < n; ++i) {
            const size_t k = size_t(r * n + i);
            const double p = std::exp(xv[k] - mx) / sum;
            sg += gv[k];
            sgy += gv[k] * p;
          }
          for (int64_t i = 0; i < n; ++i) {
            const size_t k = size_t(r * n + i);
            const double p = std::exp(xv[k] - mx) / sum, lp = xv[k] - mx - std::log(sum);
            // log_softmax subtracts max + log(sum), rounded at the scale of the max
            ok = ok && std::abs(sv[k] - p) <= tol * (1 + p) &&
                 (std::isinf(lp) ? lv[k] == lp : std::abs(lv[k] - lp) <= tol * (1 + std::abs(lp) + std::abs(mx)));
            ok = ok && std::abs(gs[k] - p * (gv[k] - sgy)) <= 4 * tol * (1 + std::abs(gv[k]));
            // log_softmax's backward takes p = exp(its output): p carries that output's rounding
            ok = ok && std::abs(gl[k] - (gv[k] - p * sg)) <= 4 * tol * (1 + std::abs(sg) * (1 + std::abs(mx)));
          }
        }
        CHECK(ok);
      }
  });
}
