// The median wall time of repeated calls, shared by the conv benchmarks (minigrad's and LibTorch's).
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

// Runs f `warmups` times untimed, then `reps` times, and returns the median in seconds.
template <class F>
double median_seconds(F&& f, int reps, int warmups = 2) {
  for (int i = 0; i < warmups; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
