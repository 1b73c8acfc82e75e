// OpenBLAS with n threads of its own, as a program calling it directly runs it: the reference rows
// of the benchmarks. minigrad runs OpenBLAS single-threaded, one call per piece of a GEMM on its own
// threads, and sets that again before each call. OpenBLAS's OpenMP build takes its thread count
// from the calling thread's OpenMP setting, so both are set.
#pragma once
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <thread>

inline void blas_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

// After OpenBLAS's own threaded calls: their OpenMP threads spin for a few milliseconds waiting for
// more work, taking cores from minigrad's threads in whatever runs next. A pause lets them sleep.
inline void blas_settle() { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }
