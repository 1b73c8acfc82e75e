// minigrad: parallel loops on minigrad's own thread pool (at::parallel_for's habits).
//
// The thread that calls a parallel loop runs chunks too, and workers claim chunks from a shared
// counter: the caller never waits for a worker that has not started (one the OS has not
// scheduled yet, say, on a machine busy with other work), only for chunks already running.
// Workers spin briefly after a loop, then sleep. Loops inside a chunk run inline, on that thread.
// An exception thrown by a chunk stops the chunks not yet started and is rethrown to the caller.
#pragma once

#include <cstdint>
#include <type_traits>

#include "threading.h"

namespace minigrad {

// True while this thread runs a chunk of a parallel loop.
bool in_parallel_region();

namespace detail {
using ChunkFn = void (*)(void* ctx, int64_t chunk, int thread);
// Runs fn(ctx, c, t) once for every chunk c in [0, chunks), t being the index (0 = the caller, up
// to get_num_threads() - 1) of the thread running it; returns when every chunk has run.
void parallel_run(int64_t chunks, ChunkFn fn, void* ctx);

// While set, this thread runs its parallel loops inline, leaving the pool to other threads (the
// DataLoader's background thread sets it, so it never takes the pool from the training loop).
void set_loops_inline(bool on);

// Test seam: while held, the pool's workers take no new chunks (as if the OS never ran them), so a
// test can show that loops still finish on the calling thread alone.
void hold_workers(bool held);
}  // namespace detail

// Calls f(chunk, thread) for every chunk in [0, chunks), chunks spread over the threads; thread is
// in [0, get_num_threads()), unique among the chunks running at one time (for per-thread scratch).
// Which thread runs which chunk varies; results that must not vary are combined in chunk order.
template <class F>
void parallel_chunks(int64_t chunks, F&& f) {
  if (chunks <= 0) return;
  using Fn = std::remove_reference_t<F>;
  detail::parallel_run(
      chunks, [](void* c, int64_t i, int t) { (*static_cast<Fn*>(c))(i, t); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// Calls f(b, e) on consecutive pieces [b, e) that cover [begin, end), each at least `grain` long
// (but one), on up to get_num_threads() threads; ranges shorter than 2 * grain run inline.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int nt = get_num_threads();
  if (nt <= 1 || n < 2 * grain || in_parallel_region()) {
    f(begin, end);
    return;
  }
  // a few pieces per thread: a thread that starts late (woken late, preempted) takes fewer
  int64_t pieces = n / grain;
  if (pieces > 4 * int64_t(nt)) pieces = 4 * int64_t(nt);
  parallel_chunks(pieces, [&](int64_t c, int) { f(begin + n * c / pieces, begin + n * (c + 1) / pieces); });
}

// The grain for parallel_for over items of `work` elements each: pieces of about half
// kParallelGrain elements, so loops under kParallelGrain elements in all stay on one thread.
inline int64_t grain_for(int64_t work) {
  const int64_t g = kParallelGrain / 2 / (work > 1 ? work : 1);
  return g > 1 ? g : 1;
}

}  // namespace minigrad
