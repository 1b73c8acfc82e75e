// The open convolution's fused CUDA kernels for the built-in combines (the layers of nn/ use these).
#include "cuda_backend.h"
#include "open_conv.cuh"

namespace minigrad::cuda {

void register_builtin_open_convs() {
  open_conv::register_combine<combine::Mul>();  // Max / Min (multiply + sum runs on the GEMM conv)
  open_conv::register_combine<combine::L1>();
  open_conv::register_combine<combine::Adder>();
  open_conv::register_combine<combine::L2>();
  open_conv::register_combine<combine::Add>();
  open_conv::register_combine<combine::Sub>();
}

}  // namespace minigrad::cuda
