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

// Deterministic mode, as torch::use_deterministic_algorithms (process-wide, off by default). By
// default a sum split across threads (a full reduction, a conv's or an open conv's weight
// gradient, a GEMM cut along k) is cut into pieces by the thread count and added in piece order:
// the same at a given thread count, run after run, but not between thread counts. In
// deterministic mode those sums are cut into kDeterministicPieces pieces whatever the thread count
// (GEMMs into the same BLAS calls), so results are bitwise equal at any thread count (and
// any scheduling). The cost: with more threads than pieces, the extra threads sit out those sums;
// at 2 threads it is within noise (bench/RESULTS.md).
void use_deterministic_algorithms(bool on);
bool are_deterministic_algorithms_enabled();
inline constexpr int kDeterministicPieces = 8;
// How many pieces a sum over `threads` threads is cut into: 2 x threads (1 for one thread), or
// kDeterministicPieces in deterministic mode whatever the threads; at most `cap`, at least 1.
long sum_pieces(int threads, long cap);

// The kernel set OpenBLAS runs (e.g. "Haswell", "SkylakeX"). Where OpenBLAS chose kernels for a
// lower vector level than the CPU has (a CPU model newer than it knows), minigrad has it choose
// again from the CPU's features when it loads (ops/cpu/gemm.cpp); the environment variable
// OPENBLAS_CORETYPE, when set, decides instead. Benchmarks print it beside their figures.
std::string blas_kernel_name();

// Loops with fewer elements than this run on one thread: splitting them costs more than it saves.
inline constexpr long kParallelGrain = 32768;

}  // namespace minigrad
