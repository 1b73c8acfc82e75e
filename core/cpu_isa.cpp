#include "cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <fstream>

#include "error.h"

namespace minigrad {

namespace {

// The levels this build compiled kernels for (CMake defines these on x86-64).
constexpr bool compiled(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return true;
#if defined(MINIGRAD_ISA_AVX2)
    case CpuIsa::Avx2: return true;
#endif
#if defined(MINIGRAD_ISA_AVX512)
    case CpuIsa::Avx512: return true;
#endif
    default: return false;
  }
}

}  // namespace

// What the CPU and OS offer. __builtin_cpu_supports reads cpuid and, for AVX and AVX-512, checks
// through xgetbv that the OS saves the wider registers.
CpuIsa cpu_isa_hardware() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return CpuIsa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::Avx2;
#endif
  return CpuIsa::Generic;
}

namespace {

CpuIsa build_best(CpuIsa hw) {
  int b = int(hw);
  while (b > 0 && !compiled(CpuIsa(b))) --b;
  return CpuIsa(b);
}

constexpr CpuIsa kLevels[] = {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512};  // lowest first

std::atomic<int> g_pretend{-1};  // tests: a lower "hardware" best
std::atomic<int> g_current{-1};  // the running level, -1 before first use

void check_supported(CpuIsa isa, const char* who) {
  MG_CHECK(cpu_isa_supported(isa), who, ": CPU level \"", cpu_isa_name(isa), "\" is not supported here (",
           compiled(isa) ? "this CPU lacks it" : "this build has no kernels for it", "); the best is \"",
           cpu_isa_name(cpu_isa_best()), "\"");
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return "generic";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

CpuIsa parse_cpu_isa(const std::string& name) {
  for (CpuIsa isa : kLevels)
    if (name == cpu_isa_name(isa)) return isa;
  MG_FAIL("MINIGRAD_CPU_ISA: unknown CPU level \"", name, "\"; expected generic, avx2 or avx512");
}

CpuIsa cpu_isa_best() {
  static const CpuIsa hw = cpu_isa_hardware();
  const int p = g_pretend.load();
  return build_best(p >= 0 && p < int(hw) ? CpuIsa(p) : hw);
}

bool cpu_isa_supported(CpuIsa isa) { return int(isa) <= int(cpu_isa_best()) && compiled(isa); }

std::vector<CpuIsa> cpu_isa_levels() {
  std::vector<CpuIsa> v;
  for (CpuIsa isa : kLevels)
    if (cpu_isa_supported(isa)) v.push_back(isa);
  return v;
}

CpuIsa cpu_isa() {
  int v = g_current.load(std::memory_order_relaxed);
  if (v >= 0) return CpuIsa(v);
  CpuIsa isa = cpu_isa_best();
  if (const char* env = std::getenv("MINIGRAD_CPU_ISA"); env && *env) {
    isa = parse_cpu_isa(env);
    check_supported(isa, "MINIGRAD_CPU_ISA");
  }
  int expected = -1;
  g_current.compare_exchange_strong(expected, int(isa));
  return CpuIsa(g_current.load());
}

void set_cpu_isa(CpuIsa isa) {
  check_supported(isa, "set_cpu_isa");
  g_current.store(int(isa));
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    // x86: "model name : ..."; some ARM kernels: "Model : ..." or only "CPU part"
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      const size_t c = line.find(':');
      if (c == std::string::npos) continue;
      size_t b = line.find_first_not_of(" \t", c + 1);
      return b == std::string::npos ? std::string() : line.substr(b);
    }
  }
  return "unknown CPU";
}

void detail::pretend_cpu_isa_best(CpuIsa best) {
  g_pretend.store(int(best));
  if (g_current.load() > int(cpu_isa_best())) g_current.store(int(cpu_isa_best()));
}
void detail::restore_cpu_isa_best() { g_pretend.store(-1); }

}  // namespace minigrad
