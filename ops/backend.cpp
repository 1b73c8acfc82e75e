#include "backend.h"

#include "cpu/cpu_backend.h"

namespace minigrad {

namespace {
Backend* g_backends[kNumDeviceTypes] = {};
}

void register_backend(DeviceType t, Backend* b) { g_backends[int(t)] = b; }

Backend& backend_for(Device d) {
  if (d.is_cpu()) return cpu::backend();
  Backend* b = g_backends[int(d.type)];
  MG_CHECK(b, "backend: no kernels for device ", d,
           " (this build of minigrad has no CUDA backend; configure with CUDA to use it)");
  return *b;
}

bool device_available(Device d) { return d.is_cpu() || g_backends[int(d.type)] != nullptr; }

}  // namespace minigrad
