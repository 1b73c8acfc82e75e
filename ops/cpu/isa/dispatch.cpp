// minigrad CPU backend: picks the kernel set of the running ISA level, and the scratch memory the
// per-level kernels use.
#include <cstdlib>
#include <cstring>

#include "../../../core/error.h"
#include "kernels.h"

namespace minigrad::cpu {

const IsaKernels& isa_kernels(CpuIsa isa) {
  switch (isa) {
#if defined(MINIGRAD_ISA_AVX512)
    case CpuIsa::Avx512: return isa_kernels_avx512();
#endif
#if defined(MINIGRAD_ISA_AVX2)
    case CpuIsa::Avx2: return isa_kernels_avx2();
#endif
    case CpuIsa::Generic: return isa_kernels_generic();
    default: break;
  }
  MG_FAIL("cpu kernels: this build has no kernels for CPU level \"", cpu_isa_name(isa), "\"");
}

}  // namespace minigrad::cpu

namespace minigrad {
double measure_fma_peak(int threads) {
  MG_CHECK(threads >= 1, "measure_fma_peak: expected a positive thread count, got ", threads);
  return cpu::isa_kernels().fma_peak(threads);
}
}  // namespace minigrad

namespace minigrad::cpu {

void* scratch_alloc(size_t bytes, bool zero) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  MG_CHECK(p, "cpu kernels: out of memory allocating ", bytes, " bytes of scratch");
  if (zero) std::memset(p, 0, rounded);
  return p;
}

void scratch_free(void* p) noexcept { std::free(p); }

}  // namespace minigrad::cpu
