// The per-ISA CPU kernels: the dispatcher's choice, the refusals, every level's conv kernels
// against each other in float32, and explain_conv.
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
  // one vectors of channels with tails, weight-gradient rows of 5, 3, 2 and 1 taps, one and two
  // vectors of channels per weight block, dilation, groups, planes narrower than a block.
  const std::vector<Case> cases = {
      {3, 1, 28, 28, 6, 5, 5, 2, 1, 1},   {2, 6, 14, 14, 16, 5, 5, 0, 1, 1},  {2, 3, 11, 13, 35, 3, 3, 1, 1, 1},
      {2, 40, 9, 7, 13, 3, 3, 1, 1, 1},   {2, 33, 6, 6, 64, 3, 3, 1, 1, 1},   {2, 64, 5, 4, 48, 2, 2, 0, 1, 1},
      {2, 24, 8, 8, 24, 1, 7, 0, 1, 1},   {2, 32, 7, 9, 32, 3, 3, 2, 2, 2},   {3, 16, 10, 10, 16, 3, 3, 1, 1, 16},
      {1, 20, 3, 3, 70, 3, 3, 1, 1, 1},   {2, 9, 12, 5, 7, 5, 1, 2, 1, 1},
  };
  const CpuIsa saved = cpu_isa();
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    CAPTURE(ci);
    manual_seed(int64_t(ci));
    Tensor x = randn({c.N, c.C, c.H, c.W}, requires_grad()), w = randn({c.Cout, c.C / c.groups, c.kh, c.kw}, requires_grad());
    const Conv2dOptions o{.padding = c.pad, .dilation = c.dil, .groups = c.groups};
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
  CHECK(explain_conv(x, w3, {.stride = 2, .padding = 1}).find("unfold + GEMM: stride (2, 2)") != std::string::npos);
  CHECK(explain_conv(x, w1).find("1x1 GEMM") != std::string::npos);
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
