// minigrad on a CUDA device, for comparison with bench/gpu/torch_gpu.py (PyTorch + cuDNN) on the
// same GPU: a LeNet-5 training step (batch 64, SGD momentum) and conv2d forward + backward of the
// 64->64 3x3 32x32 and 128->128 3x3 16x16 layers (batch 64, fp32). Median ms of 50 runs after 10
// warm-ups, each ending in synchronize(); peak device bytes from memory_stats(). Prints
// "key ms peak_MiB" lines. Usage: bench_gpu [cuda:N]
#include <minigrad/minigrad.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

using namespace minigrad;

namespace {
template <class F>
double median_ms(Device dev, F&& f) {
  for (int i = 0; i < 10; ++i) f();
  synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < 50; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    synchronize(dev);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
double peak_mib(Device dev) { return double(memory_stats(dev).peak_bytes) / double(1 << 20); }
}  // namespace

int main(int argc, char** argv) try {
  const Device dev = parse_device(argc > 1 ? argv[1] : "cuda");
  MG_CHECK(device_available(dev), "bench_gpu: ", dev, " cannot be used: ", cuda_unavailable_reason());
  const TensorOptions on(TensorOptions().device(dev));
  manual_seed(0);
  {
    using namespace nn;
    auto lenet = std::make_shared<Sequential>(
        std::make_shared<Conv2d>(1, 6, 5, minigrad::Conv2dOptions{.padding = 2}), std::make_shared<ReLU>(),
        std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), std::make_shared<Conv2d>(6, 16, 5),
        std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
        std::make_shared<Flatten>(), std::make_shared<Linear>(400, 120), std::make_shared<ReLU>(),
        std::make_shared<Linear>(120, 84), std::make_shared<ReLU>(), std::make_shared<Linear>(84, 10));
    lenet->to(dev);
    optim::SGD opt(lenet->parameters(), {.lr = 0.01, .momentum = 0.9});
    Tensor x = randn({64, 1, 28, 28}, on), y = randint(0, 10, {64}, TensorOptions(kInt64).device(dev));
    reset_peak_memory_stats(dev);
    const double ms = median_ms(dev, [&] {
      opt.zero_grad();
      cross_entropy((*lenet)(x), y).backward();
      opt.step();
    });
    std::printf("lenet_step %.4f %.1f\n", ms, peak_mib(dev));
  }
  struct Layer {
    const char* key;
    int64_t C, S;
  };
  for (Layer l : {Layer{"conv64", 64, 32}, Layer{"conv128", 128, 16}}) {
    Tensor x = randn({64, l.C, l.S, l.S}, on).requires_grad_(true);
    Tensor w = mul(randn({l.C, l.C, 3, 3}, on), 0.05).requires_grad_(true), b = zeros({l.C}, on).requires_grad_(true);
    Tensor gy = randn({64, l.C, l.S, l.S}, on);
    empty_cache(dev);
    reset_peak_memory_stats(dev);
    const double ms = median_ms(dev, [&] {
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
      conv2d(x, w, b, {.padding = 1}).backward(gy);
    });
    std::printf("%s %.4f %.1f\n", l.key, ms, peak_mib(dev));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
