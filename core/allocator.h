// minigrad: storage allocation through per-device allocators with readable counters.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "device.h"

namespace minigrad {

struct MemoryStats {
  int64_t current_bytes = 0;      // bytes held by live storages right now
  int64_t peak_bytes = 0;         // highest current_bytes since start or the last reset_peak
  int64_t allocation_count = 0;   // storages allocated since start (cumulative)
  int64_t active_allocations = 0; // storages alive right now
  int64_t cached_bytes = 0;       // bytes kept by the cache for reuse (not in current_bytes)
};

// The counters behind MemoryStats, shared by the CPU and CUDA allocators (thread-safe).
class AllocationCounters {
 public:
  // Returns the new current byte count.
  int64_t on_allocate(int64_t bytes) {
    const int64_t cur = current_ += bytes;
    int64_t peak = peak_.load();
    while (cur > peak && !peak_.compare_exchange_weak(peak, cur)) {
    }
    ++count_;
    ++active_;
    return cur;
  }
  void on_free(int64_t bytes) {
    current_ -= bytes;
    --active_;
  }
  int64_t current() const { return current_.load(); }
  MemoryStats stats(int64_t cached_bytes) const {
    return {current_.load(), peak_.load(), count_.load(), active_.load(), cached_bytes};
  }
  void reset_peak() { peak_ = current_.load(); }

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, count_{0}, active_{0};
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns at least nbytes, aligned to 64 bytes. Throws minigrad::Error when out of memory.
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Gives cached, unused blocks back to the system.
  virtual void empty_cache() = 0;
};

// Why a CUDA device cannot be used in this build (no backend compiled in, or no device present).
const char* cuda_unavailable_reason();

// The allocator of a device; throws if its backend is not built or it has no such device.
Allocator& allocator_for(Device d);
// A non-CPU backend registers how to find the allocator of each of its devices.
using AllocatorOfIndex = Allocator& (*)(int index);
void register_allocator(DeviceType t, AllocatorOfIndex of);

MemoryStats memory_stats(Device d = Device::cpu());
void reset_peak_memory_stats(Device d = Device::cpu());
void empty_cache(Device d = Device::cpu());

// CPU blocks of at least this size are pages mapped for them alone, cached for reuse (size
// classes of <= 12.5% waste) so that training steps and repeated ops do not fault fresh pages in;
// smaller ones use malloc directly. Before a new block would make tensors + cache exceed 1.5x the
// most bytes ever live in tensors (since the last empty_cache()), the longest-unused cached
// blocks are unmapped.
inline constexpr size_t kCpuCacheMinBytes = 64 * 1024;
// The CPU cache keeps at most this many unused bytes; set to 0 to disable caching.
void set_cpu_cache_limit(size_t bytes);

}  // namespace minigrad
