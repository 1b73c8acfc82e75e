// A small VGG-style CNN on CIFAR-10 with augmentation (random crop with padding, horizontal flip).
// scripts/get-cifar10.sh downloads the binary version into data/cifar10.
//
//   cifar10 [--data data/cifar10] [common flags, see --help]
#include "common.h"

int main(int argc, char** argv) try {
  using namespace examples;
  TrainConfig c = parse_args(argc, argv, {.name = "cifar10", .epochs = 30, .batch_size = 128, .lr = 0.05,
                                          .optimizer = "sgd", .weight_decay = 5e-4, .data = "data/cifar10",
                                          .out = "runs/cifar10"});
  manual_seed(c.seed);
  io::TensorDataset train_set = io::load_cifar10(c.data, true), test_set = io::load_cifar10(c.data, false);
  using namespace nn;
  auto block = [](int64_t in, int64_t out) {
    return std::make_shared<Sequential>(std::make_shared<Conv2d>(in, out, 3, minigrad::Conv2dOptions{.padding = 1}, false),
                                        std::make_shared<BatchNorm2d>(out), std::make_shared<ReLU>());
  };
  Sequential net(block(3, 32), block(32, 32), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
                 block(32, 64), block(64, 64), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
                 block(64, 128), block(128, 128), std::make_shared<AdaptiveAvgPool2d>(1), std::make_shared<Flatten>(),
                 std::make_shared<Linear>(128, 10));
  io::Transform norm = io::normalize({0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616});
  train(c, net, train_set, test_set, {io::random_crop(32, 4), io::random_horizontal_flip(), norm}, norm);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nerror: %s\n", e.what());
  return 1;
}
