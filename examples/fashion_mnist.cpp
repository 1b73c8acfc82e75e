// minigrad's main job: a small CNN on Fashion-MNIST (about 92% test accuracy in 6 epochs).
//
//   fashion_mnist [--epochs 6] [--batch-size 64] [--lr 0.002] [--data DIR] [--out DIR] [--resume] ...
//
// Progress bar, per-epoch test accuracy and time, a checkpoint and a learning-curve PNG in --out
// each epoch, and a summary (see examples/common.h).
#include "common.h"
#include "models.h"

int main(int argc, char** argv) try {
  using namespace examples;
  TrainConfig c = parse_args(argc, argv, {.name = "fashion_mnist", .epochs = 6, .lr = 2e-3,
                                          .data = "/usr/share/datasets/fashion-mnist", .out = "runs/fashion_mnist"});
  manual_seed(c.seed);
  io::TensorDataset train_set = io::load_mnist(c.data, true), test_set = io::load_mnist(c.data, false);
  auto model = fashion_cnn();
  io::Transform norm = fashion_normalize();
  train(c, *model, train_set, test_set, {norm}, norm);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "\nerror: %s\n", e.what());
  return 1;
}
