// minigrad: how many threads minigrad's loops and OpenBLAS use.
#pragma once

namespace minigrad {

// Sets the threads used by minigrad's parallel loops and by OpenBLAS (default: all cores).
void set_num_threads(int n);
int get_num_threads();

// Loops with fewer elements than this run on one thread: splitting them costs more than it saves.
inline constexpr long kParallelGrain = 32768;

}  // namespace minigrad
