#include <minigrad/minigrad.h>

#include <cmath>
#include <iostream>

// Built by scripts/test.sh from the source tree (with -DMINIGRAD_CPU_LEVELS=generic, so the open
// conv's kernels, compiled here, are those of the levels the library built) and from an install.
int main() {
  using namespace minigrad;
  Tensor x = ones({2, 2}, requires_grad());
  sum(mul(x, x)).backward();
  std::cout << "consumer: d/dx sum(x*x) at 1 = " << x.grad()[0][0].item() << "\n";
  if (x.grad()[0][0].item() != 2.0) return 1;
  // An open conv (its kernels are templates, instantiated in this program) against a plain conv.
  manual_seed(1);
  Tensor in = randn({2, 3, 6, 7});
  // sum_k -|x_k - 0| = -sum_k |x_k| (padding adds -|0 - 0| = 0): a plain conv of |x| with ones.
  Tensor y = open_conv2d(in, zeros({4, 3, 3, 3}), {}, combine::L1{}, {.padding = 1});
  Tensor ref = -conv2d(abs(in), ones({4, 3, 3, 3}), {}, {.padding = 1});
  const double err = max(abs(y - ref)).item();
  std::cout << "consumer: CPU level " << cpu_isa_name(cpu_isa()) << ", open conv L1 " << y.sizes()
            << " against conv2d: max difference " << err << "\n";
#ifdef EXPECT_CPU_ISA
  if (std::string(cpu_isa_name(cpu_isa())) != EXPECT_CPU_ISA) {
    std::cout << "consumer: expected CPU level " << EXPECT_CPU_ISA << "\n";
    return 1;
  }
#endif
  return err < 1e-4 ? 0 : 1;
}
