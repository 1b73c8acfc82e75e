#include <minigrad/minigrad.h>

#include <iostream>

int main() {
  minigrad::Tensor x = minigrad::ones({2, 2}, minigrad::requires_grad());
  minigrad::sum(minigrad::mul(x, x)).backward();
  std::cout << "consumer: d/dx sum(x*x) at 1 = " << x.grad()[0][0].item() << "\n";
  return x.grad()[0][0].item() == 2.0 ? 0 : 1;
}
