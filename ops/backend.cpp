#include "backend.h"

#include "cpu/cpu_backend.h"
#ifdef MINIGRAD_WITH_CUDA
#include "../core/cuda_context.h"
#endif

namespace minigrad {

namespace {
Backend* g_backends[kNumDeviceTypes] = {};
}  // namespace

void register_backend(DeviceType t, Backend* b) { g_backends[int(t)] = b; }

Backend& backend_for(Device d) {
  if (d.is_cpu()) return cpu::backend();
#ifdef MINIGRAD_WITH_CUDA
  if (d.is_cuda()) cuda::ensure_registered();
#endif
  Backend* b = g_backends[int(d.type)];
  MG_CHECK(b, "backend: no kernels for device ", d, " (", cuda_unavailable_reason(), ")");
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
