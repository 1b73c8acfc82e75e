// The model the checkpoint harness loads into, and its seed checkpoint (make_fuzz_corpus).
#pragma once
#include <memory>

#include "minigrad.h"

namespace mgfuzz {
inline std::shared_ptr<minigrad::nn::Sequential> fuzz_model() {
  using namespace minigrad;
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Conv2d>(1, 2, 3), std::make_shared<nn::BatchNorm2d>(2),
                                          std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 3));
}
}  // namespace mgfuzz
