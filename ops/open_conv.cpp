#include "open_conv.h"

namespace minigrad::open_conv_detail {

void check_cpu(const Tensor& x) {
  MG_CHECK(x.device().is_cpu(), "open_conv2d: the fused open-convolution kernel runs on the CPU only in this "
                                "build; got a tensor on ", x.device());
}

}  // namespace minigrad::open_conv_detail
