// One training epoch in LibTorch (oneDNN on, its default): the same models, data sizes and
// optimizer as bench_epoch. Usage: torch_epoch lenet|cifar [threads]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "lenet";
  torch::set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  torch::manual_seed(0);
  const bool lenet = which == "lenet";
  const int64_t N = lenet ? 10000 : 5000, C = lenet ? 1 : 3, S = lenet ? 28 : 32;
  // uint8 pixels, as datasets ship and keep them; each batch becomes float in [0, 1]
  auto images = torch::randint(0, 256, {N, C, S, S}, torch::kUInt8);
  auto labels = torch::randint(0, 10, {N});
  namespace nn = torch::nn;
  nn::Sequential net;
  if (lenet)
    net = nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 6, 5).padding(2)), nn::ReLU(), nn::MaxPool2d(2),
                         nn::Conv2d(6, 16, 5), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(400, 120),
                         nn::ReLU(), nn::Linear(120, 84), nn::ReLU(), nn::Linear(84, 10));
  else
    net = nn::Sequential(nn::Conv2d(nn::Conv2dOptions(3, 32, 3).padding(1)), nn::ReLU(),
                         nn::Conv2d(nn::Conv2dOptions(32, 32, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
                         nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)), nn::ReLU(),
                         nn::Conv2d(nn::Conv2dOptions(64, 64, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
                         nn::Flatten(), nn::Linear(4096, 256), nn::ReLU(), nn::Linear(256, 10));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto epoch = [&] {
    for (int64_t s = 0; s + 64 <= N; s += 64) {
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(net->forward(images.narrow(0, s, 64).to(torch::kFloat).div(255)), labels.narrow(0, s, 64));
      loss.backward();
      opt.step();
    }
  };
  epoch();
  auto t0 = std::chrono::steady_clock::now();
  epoch();
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("libtorch %s epoch: %.3f s (%d threads)\n", which.c_str(), t, torch::get_num_threads());
  return 0;
}
