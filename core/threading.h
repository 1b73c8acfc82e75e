// minigrad: how many threads minigrad's loops use.
#pragma once

#include <string>

namespace minigrad {

// The threads minigrad's parallel loops use (core/parallel.h), the calling thread included. The
// default is OMP_NUM_THREADS where set, else the CPUs this process may run on (its affinity mask).
// GEMMs are split into single-threaded OpenBLAS calls on the same threads: OpenBLAS runs no
// threads of its own. A loop running on another thread meanwhile is waited for.
void set_num_threads(int n);
int get_num_threads();

// The kernel set OpenBLAS runs (e.g. "Haswell", "SkylakeX"). Where OpenBLAS chose kernels for a
// lower vector level than the CPU has (a CPU model newer than it knows), minigrad has it choose
// again from the CPU's features when it loads (ops/cpu/gemm.cpp); the environment variable
// OPENBLAS_CORETYPE, when set, decides instead. Benchmarks print it beside their figures.
std::string blas_kernel_name();

// Loops with fewer elements than this run on one thread: splitting them costs more than it saves.
inline constexpr long kParallelGrain = 32768;

}  // namespace minigrad
