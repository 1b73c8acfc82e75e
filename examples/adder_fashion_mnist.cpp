// AdderNet on Fashion-MNIST: the two 3x3 convolutions of the CNN become AdderConv2d layers
// (-sum|x - w|, the paper's clipped dX, full-precision dW, adaptive learning-rate scaling and a
// batch norm after each), on the fused open-convolution kernel. The first layer stays a plain
// convolution, as in the paper.
//
//   adder_fashion_mnist [--epochs 3] [--batch-size 64] [--lr 0.002] [--data DIR] [--out DIR] ...
#include "common.h"
#include "models.h"

int main(int argc, char** argv) try {
  using namespace examples;
  using namespace minigrad::nn;
  TrainConfig c = parse_args(argc, argv, {.name = "adder_fashion_mnist", .epochs = 3, .lr = 2e-3,
                                          .data = "/usr/share/datasets/fashion-mnist", .out = "runs/adder_fashion_mnist"});
  manual_seed(c.seed);
  io::TensorDataset train_set = io::load_mnist(c.data, true), test_set = io::load_mnist(c.data, false);
  auto model = std::make_shared<Sequential>(
      std::make_shared<Conv2d>(1, 16, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<BatchNorm2d>(16),
      std::make_shared<ReLU>(),
      std::make_shared<AdderConv2d>(16, 32, 3, AdderConv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
      std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
      std::make_shared<AdderConv2d>(32, 64, 3, AdderConv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
      std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), std::make_shared<Flatten>(),
      std::make_shared<Linear>(64 * 7 * 7, 10));
  io::Transform norm = fashion_normalize();
  train(c, *model, train_set, test_set, {norm}, norm);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nerror: %s\n", e.what());
  return 1;
}
