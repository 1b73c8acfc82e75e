// minigrad CPU kernels at the "generic" level: baseline flags: SSE2 on x86-64, NEON on AArch64.
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // the intrinsics are always-inline: nothing of them is emitted to share
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "kernels.h"
#if defined(MINIGRAD_SLEEF)  // SLEEF's vector math at this level: sse2 on x86-64, advsimd on AArch64
#include <sleef.h>
#if defined(__aarch64__)
#define MG_SLEEF_ISA advsimd
#else
#define MG_SLEEF_ISA sse2
#endif
#define MG_SLEEF_FW f4
#define MG_SLEEF_DW d2
#endif

#define MG_ISA_NS isa_generic
#define MG_ISA_TABLE table
#define MG_ISA_ENUM CpuIsa::Generic
#define MG_VEC_BYTES 16
#define MG_VEC_REGS 16
#include "kernels.inc"
#include "vecmath.inc"  // the cf:: math's vector forms at this level

namespace minigrad::cpu {
const IsaKernels& isa_kernels_generic() { return isa_generic::table(); }
}  // namespace minigrad::cpu
