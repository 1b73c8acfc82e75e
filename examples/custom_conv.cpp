// custom_conv: a new convolution in a few lines, trained beside a plain one.
//
//   custom_conv [--data DIR] [--max-steps N] [--threads T]
//
// The combine functor is all a researcher writes: how one patch value x meets one weight w.
// minigrad inlines it into its fused, multithreaded kernel and derives the backward from the
// formula with dual numbers; no loops, no unfold, no broadcast tensor.
#include "common.h"
#include "models.h"

// A Huber distance between the patch and the weight: quadratic near zero, linear beyond 1.
struct Huber {
  template <class T>
  T operator()(T x, T w) const {
    T d = minigrad::cf::abs(x - w);
    return d < T(1) ? T(-0.5) * d * d : T(0.5) - d;
  }
};

namespace {
using namespace minigrad;

// The same small network with the middle layer as `Mid`.
template <class Mid>
std::shared_ptr<nn::Sequential> network(std::shared_ptr<Mid> mid) {
  using namespace nn;
  return std::make_shared<Sequential>(
      std::make_shared<Conv2d>(1, 16, 3, minigrad::Conv2dOptions{.padding = 1}), std::make_shared<BatchNorm2d>(16),
      std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), mid,
      std::make_shared<BatchNorm2d>(32), std::make_shared<ReLU>(),
      std::make_shared<MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}), std::make_shared<Flatten>(),
      std::make_shared<Linear>(32 * 7 * 7, 10));
}

struct Result {
  double seconds, accuracy, peak_mib;
};

Result one_epoch(nn::Module& model, const io::TensorDataset& train_set, const io::TensorDataset& test_set,
                 const io::Transform& norm, int64_t max_steps) {
  manual_seed(1);
  optim::Adam opt(model.parameters(), optim::AdamOptions{.lr = 2e-3});
  io::DataLoader loader(train_set, {.batch_size = 64, .shuffle = true, .drop_last = true, .seed = 1, .transforms = {norm}});
  empty_cache();
  reset_peak_memory_stats();
  const int64_t base = memory_stats().current_bytes;
  const auto t0 = std::chrono::steady_clock::now();
  model.train();
  int64_t step = 0;
  loader.start_epoch();
  while (auto batch = loader.next()) {
    Tensor loss = cross_entropy(model.forward(batch->data), batch->target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (max_steps > 0 && ++step >= max_steps) break;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double peak = double(memory_stats().peak_bytes - base) / (1 << 20);
  return {secs, examples::evaluate(model, test_set, norm, nullptr), peak};
}
}  // namespace

int main(int argc, char** argv) try {
  examples::TrainConfig c = examples::parse_args(
      argc, argv, {.name = "custom_conv", .epochs = 1, .data = "/usr/share/datasets/fashion-mnist"});
  if (c.threads > 0) set_num_threads(int(c.threads));
  io::TensorDataset train_set = io::load_mnist(c.data, true), test_set = io::load_mnist(c.data, false);
  io::Transform norm = examples::fashion_normalize();
  manual_seed(1);
  auto huber = network(std::make_shared<nn::OpenConv2d<Huber>>(16, 32, 3, OpenConv2dOptions{.padding = 1}));
  manual_seed(1);
  auto plain = network(std::make_shared<nn::Conv2d>(16, 32, 3, minigrad::Conv2dOptions{.padding = 1}));
  std::printf("one epoch of Fashion-MNIST (%lld images), %d threads\n", (long long)train_set.size(), get_num_threads());
  std::printf("%-22s %10s %10s %16s\n", "middle layer", "time s", "test acc", "peak tensor MiB");
  for (auto [name, model] : {std::pair{"Huber open conv", huber}, std::pair{"plain conv", plain}}) {
    Result r = one_epoch(*model, train_set, test_set, norm, c.max_steps);
    std::printf("%-22s %10.1f %9.2f%% %16.1f\n", name, r.seconds, 100 * r.accuracy, r.peak_mib);
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nerror: %s\n", e.what());
  return 1;
}
