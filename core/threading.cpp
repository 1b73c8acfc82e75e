#include "threading.h"

#include <omp.h>

#include "error.h"

extern "C" void openblas_set_num_threads(int);

namespace minigrad {

void set_num_threads(int n) {
  MG_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace minigrad
