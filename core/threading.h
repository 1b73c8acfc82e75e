// minigrad: how many threads minigrad's loops and OpenBLAS use.
#pragma once

#include <string>

namespace minigrad {

// Sets the threads used by minigrad's parallel loops and by OpenBLAS (default: all cores).
void set_num_threads(int n);
int get_num_threads();

// The kernel set OpenBLAS chose for this CPU (e.g. "Haswell", "Cooperlake"); the environment
// variable OPENBLAS_CORETYPE overrides OpenBLAS's choice. Benchmarks print it beside their figures.
std::string blas_kernel_name();

// Loops with fewer elements than this run on one thread: splitting them costs more than it saves.
inline constexpr long kParallelGrain = 32768;

}  // namespace minigrad
