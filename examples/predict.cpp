// Classifies a PNG/JPEG with a Fashion-MNIST checkpoint written by fashion_mnist.
//
//   predict CHECKPOINT IMAGE
#include <minigrad/minigrad.h>

#include <cstdio>

#include "models.h"

int main(int argc, char** argv) try {
  using namespace minigrad;
  if (argc != 3) {
    std::fprintf(stderr, "usage: predict CHECKPOINT IMAGE\n");
    return 2;
  }
  auto model = examples::fashion_cnn();
  const int64_t epoch = io::load_checkpoint(argv[1], *model, nullptr);
  model->eval();
  Tensor img = io::load_image(argv[2], 1);  // grayscale, [0, 1]
  MG_CHECK(img.size(1) == 28 && img.size(2) == 28, "predict: expected a 28x28 image, got ", img.size(2), "x", img.size(1));
  NoGradGuard ng;
  Tensor x = div(sub(img.unsqueeze(0), examples::kFashionMean), examples::kFashionStd);
  Tensor p = softmax((*model)(x), 1)[0];
  static const char* names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  const int64_t k = argmax(p).item<int64_t>();
  std::printf("%s: %s (%.1f%%), checkpoint from epoch %lld\n", argv[2], names[k], 100 * p[k].item(), (long long)epoch);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
