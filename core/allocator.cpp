#include "allocator.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "error.h"

namespace minigrad {
namespace {

size_t round_size(size_t n) {
  if (n < kCpuCacheMinBytes) return (n + 63) & ~size_t(63);
  int hi = 63 - __builtin_clzll(n);
  size_t step = size_t(1) << (hi - 3);
  return (n + step - 1) & ~(step - 1);
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
        p = it->second.back();
        it->second.pop_back();
        cached_ -= int64_t(sz);
      }
    }
    if (!p) {
      p = std::aligned_alloc(64, sz);
      if (!p) {
        empty_cache();
        p = std::aligned_alloc(64, sz);
      }
      MG_CHECK(p, "cpu allocator: out of memory allocating ", nbytes, " bytes (", current_.load(),
               " bytes held by tensors)");
    }
    int64_t cur = current_ += int64_t(sz);
    int64_t peak = peak_.load();
    while (cur > peak && !peak_.compare_exchange_weak(peak, cur)) {
    }
    ++count_;
    ++active_;
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    size_t sz = round_size(nbytes == 0 ? 64 : nbytes);
    current_ -= int64_t(sz);
    --active_;
    if (sz >= kCpuCacheMinBytes) {
      std::lock_guard<std::mutex> lk(mu_);
      if (cached_ + int64_t(sz) <= int64_t(limit_)) {
        cache_[sz].push_back(p);
        cached_ += int64_t(sz);
        return;
      }
    }
    std::free(p);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return {current_.load(), peak_.load(), count_.load(), active_.load(), cached_};
  }
  void reset_peak() override { peak_ = current_.load(); }
  void empty_cache() override {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [sz, v] : cache_)
      for (void* p : v) std::free(p);
    cache_.clear();
    cached_ = 0;
  }
  void set_limit(size_t b) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      limit_ = b;
    }
    empty_cache();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> cache_;
  int64_t cached_ = 0;
  size_t limit_ = size_t(1) << 30;
  std::atomic<int64_t> current_{0}, peak_{0}, count_{0}, active_{0};
};

CpuAllocator& cpu_allocator() {
  static CpuAllocator* a = new CpuAllocator();  // never destroyed: storages may outlive statics
  return *a;
}

Allocator* g_allocators[kNumDeviceTypes] = {};

}  // namespace

void register_allocator(DeviceType t, Allocator* a) { g_allocators[int(t)] = a; }

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  Allocator* a = g_allocators[int(d.type)];
  MG_CHECK(a, "allocator: no allocator for device ", d,
           " (this build of minigrad has no CUDA backend; configure with CUDA to use it)");
  return *a;
}

MemoryStats memory_stats(Device d) { return allocator_for(d).stats(); }
void reset_peak_memory_stats(Device d) { allocator_for(d).reset_peak(); }
void empty_cache(Device d) { allocator_for(d).empty_cache(); }
void set_cpu_cache_limit(size_t bytes) { cpu_allocator().set_limit(bytes); }

namespace detail {
void throw_error(const std::string& msg) { throw Error(msg); }
}  // namespace detail

}  // namespace minigrad
