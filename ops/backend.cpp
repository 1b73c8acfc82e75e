#include "backend.h"

#include <algorithm>
#include <string>

#include "cpu/cpu_backend.h"
#include "ops.h"
#ifdef MINIGRAD_WITH_CUDA
#include "../core/cuda_context.h"
#endif

namespace minigrad {

namespace {
Backend* g_backends[kNumDeviceTypes] = {};
}  // namespace

void register_backend(DeviceType t, Backend* b) { g_backends[int(t)] = b; }

ConvChoice Backend::choose_conv(const Conv2dGeometry&, int64_t, int64_t, DType, ConvAlgorithm requested, bool) {
  return {false, requested == ConvAlgorithm::Direct
                     ? "unfold + GEMM: this device has no direct conv kernels (ConvAlgorithm::Direct is CPU-only)"
                     : "unfold + GEMM: this device's only conv algorithm"};
}
void Backend::conv2d_direct(const Tensor& y, const Tensor&, const Tensor&, const Conv2dGeometry&, int64_t) {
  MG_FAIL("conv2d_direct: no direct conv kernels for ", y.device(), " tensors");
}
void Backend::conv2d_direct_data(const Tensor& dx, const Tensor&, const Tensor&, const Conv2dGeometry&, int64_t) {
  MG_FAIL("conv2d_direct_data: no direct conv kernels for ", dx.device(), " tensors");
}
void Backend::conv2d_direct_weight(const Tensor& dw, const Tensor&, const Tensor&, const Conv2dGeometry&, int64_t) {
  MG_FAIL("conv2d_direct_weight: no direct conv kernels for ", dw.device(), " tensors");
}

bool gemm_without_products(Backend& be, const Tensor& out, int64_t K, double beta) {
  if (out.numel() == 0) return true;
  if (K != 0) return false;
  if (beta == 0.0) be.fill(out, 0.0);
  else be.binary(BinaryOp::Mul, out, out, full(out.sizes(), beta, out.options()), 1.0);
  return true;
}

void synchronize(Device d) {
  if (d.is_cpu()) return;
  MG_CHECK(device_available(d), "synchronize: device ", d, " cannot be used (", cuda_unavailable_reason(), ")");
#ifdef MINIGRAD_WITH_CUDA
  cuda::stream_synchronize(d);
#endif
}

Device parse_device(std::string_view s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.substr(0, 5) == "cuda:" && s.size() > 5 && s.size() <= 8 &&
      std::all_of(s.begin() + 5, s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return Device::cuda(std::stoi(std::string(s.substr(5))));
  MG_FAIL("device: expected \"cpu\", \"cuda\" or \"cuda:N\", got \"", s, "\"");
}

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
