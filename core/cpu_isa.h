// minigrad: which vector instruction set the CPU kernels run. The hot CPU kernels are compiled once
// per level, each in translation units of their own with their own flags (ops/cpu/isa/), and one
// level is chosen at start-up from the CPU's features (cpuid), so one binary runs at full speed on
// an AVX2 laptop and on an AVX-512 server and still runs on a CPU with neither. The environment
// variable MINIGRAD_CPU_ISA=generic|avx2|avx512 forces a lower level (like ATen's
// ATEN_CPU_CAPABILITY); asking for one this CPU or this build lacks is an error.
#pragma once
#include <string>
#include <vector>

namespace minigrad {

enum class CpuIsa {
  Generic = 0,  // baseline code: SSE2 on x86-64, NEON on AArch64; 16-byte vectors
  Avx2 = 1,     // AVX2 + FMA: 8 floats a vector, 16 vector registers
  Avx512 = 2,   // AVX-512 F/BW/DQ/VL: 16 floats a vector, 32 vector registers
};

const char* cpu_isa_name(CpuIsa isa);           // "generic", "avx2", "avx512"
CpuIsa parse_cpu_isa(const std::string& name);  // the inverse; throws on an unknown name
// The best level this CPU and its OS (saved vector state) support, whatever this build has kernels
// for (OpenBLAS's kernels are chosen from it, ops/cpu/gemm.cpp).
CpuIsa cpu_isa_hardware();
// The best level this CPU, its OS (saved vector state) and this build support.
CpuIsa cpu_isa_best();
bool cpu_isa_supported(CpuIsa isa);
// Every supported level, lowest first (tests and benchmarks run each).
std::vector<CpuIsa> cpu_isa_levels();
// The level the kernels run now: MINIGRAD_CPU_ISA if set (checked on first use), else the best.
CpuIsa cpu_isa();
// Runs the kernels at `isa` from now on; throws if this CPU or build does not support it.
void set_cpu_isa(CpuIsa isa);
// Measures the GFLOP/s of independent float multiply-adds (FMA where the level has one) at the
// running level on `threads` threads: the peak that benchmarks compare the conv kernels with.
double measure_fma_peak(int threads);
// The CPU's model name (from /proc/cpuinfo where there is one), for benchmark reports.
std::string cpu_model_name();

namespace detail {
// Tests only: pretend the CPU's best level is `best` (to check the refusals on any machine);
// restore_cpu_isa_best() undoes it.
void pretend_cpu_isa_best(CpuIsa best);
void restore_cpu_isa_best();
}  // namespace detail

}  // namespace minigrad
