#include <minigrad/minigrad.h>
#include <iostream>
using namespace minigrad;

int main() {  // fit y = 3x + 1 by gradient descent
  manual_seed(0);
  Tensor x = randn({64, 1}), y = 3.0 * x + 1.0;
  Tensor w = zeros({1, 1}, requires_grad()), b = zeros({1}, requires_grad());
  for (int step = 0; step < 200; ++step) {
    Tensor loss = mse_loss(matmul(x, w) + b, y);
    loss.backward();
    NoGradGuard no_grad;                      // updates are not recorded
    w.sub_(w.grad() * 0.1); b.sub_(b.grad() * 0.1);
    w.zero_grad(); b.zero_grad();
  }
  std::cout << "w = " << w.item() << ", b = " << b.item() << "\n";  // w = 3, b = 1
}
