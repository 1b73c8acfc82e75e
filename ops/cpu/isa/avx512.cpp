// minigrad CPU kernels at the "avx512" level: -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma (set by CMake).
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // the intrinsics are always-inline: nothing of them is emitted to share
#endif

#include "kernels.h"
#if defined(MINIGRAD_SLEEF)  // SLEEF's vector math at this level
#include <sleef.h>
#define MG_SLEEF_ISA avx512f
#define MG_SLEEF_FW f16
#define MG_SLEEF_DW d8
#endif

#if !defined(__AVX512F__) || !defined(__FMA__)
#error "ops/cpu/isa/avx512.cpp must be compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma"
#endif
#define MG_ISA_NS isa_avx512
#define MG_ISA_TABLE table
#define MG_ISA_ENUM CpuIsa::Avx512
#define MG_VEC_BYTES 64
#define MG_VEC_REGS 32
#include "kernels.inc"
#include "vecmath.inc"  // the cf:: math's vector forms at this level

namespace minigrad::cpu {
const IsaKernels& isa_kernels_avx512() { return isa_avx512::table(); }
}  // namespace minigrad::cpu
