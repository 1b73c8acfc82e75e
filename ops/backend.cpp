#include "backend.h"

#include "cpu/cpu_backend.h"
#ifdef MINIGRAD_WITH_CUDA
#include "../core/cuda_context.h"
#endif

namespace minigrad {

namespace {
Backend* g_backends[kNumDeviceTypes] = {};
#ifdef MINIGRAD_WITH_CUDA
constexpr const char* kNoBackendWhy = "this build has the CUDA backend, but no CUDA device is present";
#else
constexpr const char* kNoBackendWhy = "this build of minigrad has no CUDA backend; configure with CUDA to use it";
#endif
}  // namespace

void register_backend(DeviceType t, Backend* b) { g_backends[int(t)] = b; }

Backend& backend_for(Device d) {
  if (d.is_cpu()) return cpu::backend();
#ifdef MINIGRAD_WITH_CUDA
  if (d.is_cuda()) cuda::ensure_registered();
#endif
  Backend* b = g_backends[int(d.type)];
  MG_CHECK(b, "backend: no kernels for device ", d, " (", kNoBackendWhy, ")");
  return *b;
}

bool device_available(Device d) {
  if (d.is_cpu()) return true;
#ifdef MINIGRAD_WITH_CUDA
  if (d.is_cuda() && (!cuda::ensure_registered() || d.index >= cuda::device_count())) return false;
#endif
  return g_backends[int(d.type)] != nullptr && d.index >= 0;
}

}  // namespace minigrad
