// One training epoch through minigrad: LeNet-5 on 10,000 28x28 images, or the 4-conv CIFAR CNN on
// 5,000 32x32 images; SGD with momentum, batch 64, synthetic data (the timing does not depend on
// the values). Prints the epoch time; run under /usr/bin/time -v for the peak RSS.
// Usage: bench_epoch lenet|cifar [threads] [--algo=auto|gemm|direct] [--deterministic]
#include <minigrad/minigrad.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace minigrad;

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "lenet";
  if (argc > 2) set_num_threads(std::atoi(argv[2]));
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--algo=gemm") set_conv_algorithm(ConvAlgorithm::Gemm);
    else if (a == "--algo=direct") set_conv_algorithm(ConvAlgorithm::Direct);
    else if (a == "--deterministic") use_deterministic_algorithms(true);
    else if (a != "--algo=auto") {
      std::fprintf(stderr, "usage: bench_epoch lenet|cifar [threads] [--algo=auto|gemm|direct] [--deterministic]\n");
      return 2;
    }
  }
  manual_seed(0);
  const bool lenet = which == "lenet";
  const int64_t N = lenet ? 10000 : 5000, C = lenet ? 1 : 3, S = lenet ? 28 : 32;
  // uint8 pixels, as minigrad's dataset loaders keep them; each batch becomes float32 in [0, 1]
  Tensor images = randint(0, 256, {N, C, S, S}, kUInt8);
  Tensor labels = randint(0, 10, {N});
  using namespace nn;
  using MP = MaxPool2dOptions;
  std::shared_ptr<Sequential> net;
  if (lenet)
    net = std::make_shared<Sequential>(
        std::make_shared<Conv2d>(1, 6, 5, minigrad::Conv2dOptions{.padding = 2}), std::make_shared<ReLU>(),
        std::make_shared<MaxPool2d>(MP{.kernel_size = 2}), std::make_shared<Conv2d>(6, 16, 5), std::make_shared<ReLU>(),
        std::make_shared<MaxPool2d>(MP{.kernel_size = 2}), std::make_shared<Flatten>(), std::make_shared<Linear>(400, 120),
        std::make_shared<ReLU>(), std::make_shared<Linear>(120, 84), std::make_shared<ReLU>(), std::make_shared<Linear>(84, 10));
  else
    net = std::make_shared<Sequential>(
        std::make_shared<Conv2d>(3, 32, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
        std::make_shared<Conv2d>(32, 32, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
        std::make_shared<MaxPool2d>(MP{.kernel_size = 2}),
        std::make_shared<Conv2d>(32, 64, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
        std::make_shared<Conv2d>(64, 64, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<ReLU>(),
        std::make_shared<MaxPool2d>(MP{.kernel_size = 2}), std::make_shared<Flatten>(),
        std::make_shared<Linear>(4096, 256), std::make_shared<ReLU>(), std::make_shared<Linear>(256, 10));
  optim::SGD opt(net->parameters(), {.lr = 0.01, .momentum = 0.9});
  auto epoch = [&] {
    for (int64_t s = 0; s + 64 <= N; s += 64) {
      opt.zero_grad();
      Tensor loss = cross_entropy((*net)(mul(images.narrow(0, s, 64).to(kFloat32), 1.0 / 255)), labels.narrow(0, s, 64));
      loss.backward();
      opt.step();
    }
  };
  epoch();  // warm-up (allocator cache, OpenBLAS buffers)
  auto t0 = std::chrono::steady_clock::now();
  epoch();
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("minigrad %s epoch: %.3f s (%d threads, CPU ISA level %s)\n", which.c_str(), t, get_num_threads(),
              cpu_isa_name(cpu_isa()));
  return 0;
}
