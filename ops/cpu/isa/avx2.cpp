// minigrad CPU kernels at the "avx2" level: -mavx2 -mfma (set by CMake).
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // the intrinsics are always-inline: nothing of them is emitted to share
#endif

#include "kernels.h"
#if defined(MINIGRAD_SLEEF)  // SLEEF's vector math at this level
#include <sleef.h>
#define MG_SLEEF_ISA avx2
#define MG_SLEEF_FW f8
#define MG_SLEEF_DW d4
#endif

#if !defined(__AVX2__) || !defined(__FMA__)
#error "ops/cpu/isa/avx2.cpp must be compiled with -mavx2 -mfma"
#endif
#define MG_ISA_NS isa_avx2
#define MG_ISA_TABLE table
#define MG_ISA_ENUM CpuIsa::Avx2
#define MG_VEC_BYTES 32
#define MG_VEC_REGS 16
#include "kernels.inc"
#include "vecmath.inc"  // the cf:: math's vector forms at this level

namespace minigrad::cpu {
const IsaKernels& isa_kernels_avx2() { return isa_avx2::table(); }
}  // namespace minigrad::cpu
