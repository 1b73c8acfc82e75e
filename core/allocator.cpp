#include "allocator.h"

#include <sys/mman.h>

#include <atomic>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "error.h"
#ifdef MINIGRAD_WITH_CUDA
#include "cuda_context.h"
#endif

namespace minigrad {
namespace {

size_t round_size(size_t n) {
  if (n < kCpuCacheMinBytes) return (n + 63) & ~size_t(63);
  int hi = 63 - __builtin_clzll(n);
  size_t step = size_t(1) << (hi - 3);
  return (n + step - 1) & ~(step - 1);
}

// Blocks of cached sizes are mapped pages of their own: freeing one gives its memory back to the
// OS at once (through malloc, freed big blocks raise glibc's mmap threshold and then stay in a
// fragmented heap). Smaller blocks use malloc.
void* sys_alloc(size_t sz) {
  if (sz < kCpuCacheMinBytes) return std::aligned_alloc(64, sz);
  void* p = mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}
void sys_free(void* p, size_t sz) {
  if (sz < kCpuCacheMinBytes) std::free(p);
  else munmap(p, sz);
}

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    size_t sz = round_size(nbytes == 0 ? 64 : nbytes);
    void* p = nullptr;
    if (sz >= kCpuCacheMinBytes) {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = cache_.find(sz);
      if (it != cache_.end() && !it->second.empty()) {
        p = it->second.back().p;  // the most recently cached: its pages are the likeliest warm
        it->second.pop_back();
        cached_ -= int64_t(sz);
      } else {
        trim_for(sz);
      }
    }
    if (!p) {
      p = sys_alloc(sz);
      if (!p) {
        empty_cache();
        p = sys_alloc(sz);
      }
      MG_CHECK(p, "cpu allocator: out of memory allocating ", nbytes, " bytes (", counters_.current(),
               " bytes held by tensors)");
    }
    const int64_t cur = counters_.on_allocate(int64_t(sz));
    int64_t high = live_high_.load();
    while (cur > high && !live_high_.compare_exchange_weak(high, cur)) {
    }
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    size_t sz = round_size(nbytes == 0 ? 64 : nbytes);
    counters_.on_free(int64_t(sz));
    if (sz >= kCpuCacheMinBytes) {
      std::lock_guard<std::mutex> lk(mu_);
      if (cached_ + int64_t(sz) <= int64_t(limit_)) {
        cache_[sz].push_back({p, ++clock_});
        cached_ += int64_t(sz);
        return;
      }
    }
    sys_free(p, sz);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return counters_.stats(cached_);
  }
  void reset_peak() override { counters_.reset_peak(); }
  void empty_cache() override {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [sz, v] : cache_)
      for (const Cached& c : v) sys_free(c.p, sz);
    cache_.clear();
    cached_ = 0;
    live_high_ = counters_.current();  // the cache's cap starts again from what is live now
  }
  void set_limit(size_t b) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      limit_ = b;
    }
    empty_cache();
  }

 private:
  struct Cached {
    void* p;
    uint64_t stamp;  // when it was cached
  };

  // A miss of size sz is about to map new pages. If the footprint (tensor bytes + cached bytes)
  // would then pass kFootprintSlack times the most tensor bytes ever live, the longest-unused
  // cached blocks are unmapped first, so a program whose shapes change (a test pass at another
  // batch size) does not keep every shape's blocks. The slack is generous: each size class peaks
  // at its own time (a CIFAR CNN's step holds 78 MB of blocks for 55 MB of tensors at most), and
  // a tighter cap makes every step unmap and fault in the same blocks again (1.0: 40% slower).
  static constexpr double kFootprintSlack = 1.5;
  void trim_for(size_t sz) {
    const int64_t cap = int64_t(double(std::max(live_high_.load(), counters_.current() + int64_t(sz))) *
                                kFootprintSlack);
    while (cached_ > 0 && counters_.current() + cached_ + int64_t(sz) > cap) {
      auto oldest = cache_.end();
      for (auto it = cache_.begin(); it != cache_.end(); ++it)
        if (!it->second.empty() && (oldest == cache_.end() || it->second.front().stamp < oldest->second.front().stamp))
          oldest = it;
      sys_free(oldest->second.front().p, oldest->first);
      oldest->second.pop_front();
      cached_ -= int64_t(oldest->first);
    }
  }

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::deque<Cached>> cache_;
  int64_t cached_ = 0;
  uint64_t clock_ = 0;
  size_t limit_ = size_t(1) << 30;
  AllocationCounters counters_;
  std::atomic<int64_t> live_high_{0};  // the most tensor bytes ever live (reset_peak leaves it)
};

CpuAllocator& cpu_allocator() {
  static CpuAllocator* a = new CpuAllocator();  // never destroyed: storages may outlive statics
  return *a;
}

AllocatorOfIndex g_allocators[kNumDeviceTypes] = {};



}  // namespace

const char* cuda_unavailable_reason() {
#ifdef MINIGRAD_WITH_CUDA
  return "this build has the CUDA backend, but no CUDA device is present";
#else
  return "this build of minigrad has no CUDA backend; configure with CUDA to use it";
#endif
}

void register_allocator(DeviceType t, AllocatorOfIndex of) { g_allocators[int(t)] = of; }

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
#ifdef MINIGRAD_WITH_CUDA
  if (d.is_cuda()) cuda::ensure_allocator();
#endif
  AllocatorOfIndex of = g_allocators[int(d.type)];
  MG_CHECK(of, "allocator: no allocator for device ", d, " (", cuda_unavailable_reason(), ")");
  return of(d.index);
}

MemoryStats memory_stats(Device d) { return allocator_for(d).stats(); }
void reset_peak_memory_stats(Device d) { allocator_for(d).reset_peak(); }
void empty_cache(Device d) { allocator_for(d).empty_cache(); }
void set_cpu_cache_limit(size_t bytes) { cpu_allocator().set_limit(bytes); }

namespace detail {
void throw_error(const std::string& msg) { throw Error(msg); }
}  // namespace detail

}  // namespace minigrad
