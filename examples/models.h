// Models shared by the example programs (a checkpoint loads into the same definition it was
// trained with).
#pragma once
#include <minigrad/minigrad.h>

#include <memory>

namespace examples {

// Fashion-MNIST's pixel mean and standard deviation (on [0, 1]), for every program that reads it.
constexpr double kFashionMean = 0.2860, kFashionStd = 0.3530;
inline minigrad::io::Transform fashion_normalize() { return minigrad::io::normalize({kFashionMean}, {kFashionStd}); }

// The Fashion-MNIST CNN: two conv + batch-norm + max-pool blocks and a two-layer classifier.
inline std::shared_ptr<minigrad::nn::Sequential> fashion_cnn() {
  using namespace minigrad;
  using namespace minigrad::nn;
  return std::make_shared<Sequential>(
      std::make_shared<Conv2d>(1, 32, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<BatchNorm2d>(32),
      std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
      std::make_shared<Conv2d>(32, 64, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<BatchNorm2d>(64),
      std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
      std::make_shared<Flatten>(), std::make_shared<Linear>(64 * 7 * 7, 128), std::make_shared<ReLU>(),
      std::make_shared<Dropout>(0.25), std::make_shared<Linear>(128, 10));
}

}  // namespace examples
