// A program's own combine on CUDA: registered with MG_CUDA_OPEN_CONV in a .cu file (this one, built
// with the CUDA backend), then run on the GPU and compared with the CPU, forward and backward.
// The registration itself is checked without a GPU; the comparison skips without one.
#include "../helpers.h"
#include "ops/cuda/open_conv.cuh"

using namespace mgtest;

namespace {
struct HuberOnGpu {
  template <class T>
  MG_HOST_DEVICE T operator()(T x, T w) const {
    T d = cf::abs(x - w);
    return d < T(1) ? T(-0.5) * d * d : T(0.5) - d;
  }
};
}  // namespace

MG_CUDA_OPEN_CONV(HuberOnGpu);

TEST_CASE("CUDA: MG_CUDA_OPEN_CONV registers a program's combine; on a GPU it matches the CPU") {
  for (DType dt : {kFloat32, kFloat64})
    for (auto r : {std::type_index(typeid(reduce::Sum)), std::type_index(typeid(reduce::Max)),
                   std::type_index(typeid(reduce::Min))})
      CHECK(open_conv_detail::find_cuda_open_conv(typeid(HuberOnGpu), r, dt) != nullptr);
  // the built-in combines are registered with the backend, which registers only with a device
  const bool gpu = device_available(Device::cuda());  // registers the backend when there is a device
  const bool builtin = open_conv_detail::find_cuda_open_conv(typeid(combine::L1), typeid(reduce::Sum), kFloat32);
  CHECK(builtin == gpu);
  if (!device_available(Device::cuda())) {
    MESSAGE("no CUDA device: the GPU comparison is skipped");
    return;
  }
  for (Reduce red : {Reduce::Sum, Reduce::Max, Reduce::Min}) {
    CAPTURE(int(red));
    Tensor x = leaf({2, 4, 7, 6}, Device::cpu()), w = leaf({6, 2, 3, 3}, Device::cpu()), b = leaf({6}, Device::cpu());
    const OpenConv2dOptions o{.stride = {2, 1}, .padding = 1, .groups = 2, .reduce = red};
    Tensor xg = x.detach().to(Device::cuda()).requires_grad_(), wg = w.detach().to(Device::cuda()).requires_grad_(),
           bg = b.detach().to(Device::cuda()).requires_grad_();
    Tensor y = open_conv2d(x, w, b, HuberOnGpu{}, o), yg = open_conv2d(xg, wg, bg, HuberOnGpu{}, o);
    check_close(vals(yg), vals(y), 1e-12);
    Tensor gy = randn(y.sizes(), kFloat64);
    y.backward(gy);
    yg.backward(gy.to(Device::cuda()));
    check_close(vals(xg.grad()), vals(x.grad()), 1e-10);
    check_close(vals(wg.grad()), vals(w.grad()), 1e-10);
    check_close(vals(bg.grad()), vals(b.grad()), 1e-10);
  }
}
