// minigrad: CUDA device memory through a caching allocator, and each device's stream and cuBLAS
// handle. Blocks are rounded to size classes (<= 12.5% waste, as on the CPU) and kept per device
// for reuse; empty_cache() gives them back. All work of a device runs on its one stream, so a
// freed block is reused in stream order without a synchronisation.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "allocator.h"
#include "cuda_check.h"
#include "cuda_context.h"

#define MG_STR2(x) #x
#define MG_STR(x) MG_STR2(x)

namespace minigrad::cuda {

namespace {

constexpr int kMaxDevices = 16;

struct PerDevice {
  std::once_flag once;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
};
PerDevice g_devices[kMaxDevices];

void check_index(Device d) {
  MG_CHECK(d.is_cuda(), "cuda: expected a CUDA device, got ", d);
  const int n = device_count();
  MG_CHECK(d.index >= 0 && d.index < n, "cuda: device ", d, " does not exist (", n, " CUDA device",
           n == 1 ? "" : "s", " present)");
}

PerDevice& init(Device d) {
  check_index(d);
  PerDevice& p = g_devices[d.index];
  std::call_once(p.once, [&] {
    MG_CUDA_CHECK(cudaSetDevice(d.index));
    MG_CUDA_CHECK(cudaStreamCreateWithFlags(&p.stream, cudaStreamNonBlocking));
    MG_CUBLAS_CHECK(cublas().create(&p.blas));
    MG_CUBLAS_CHECK(cublas().set_stream(p.blas, p.stream));
  });
  return p;
}

size_t round_size(size_t n) {
  if (n <= 512) return 512;
  int hi = 63 - __builtin_clzll(n);
  size_t step = size_t(1) << std::max(hi - 3, 9);
  return (n + step - 1) & ~(step - 1);
}

std::string mib(int64_t b) { return std::to_string(b / (1 << 20)) + " MiB"; }

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}

  void* allocate(size_t nbytes) override {
    const size_t sz = round_size(nbytes);
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = cache_.find(sz);
      if (it != cache_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= int64_t(sz);
        count(sz);
        return p;
      }
    }
    set_device(Device::cuda(index_));
    void* p = nullptr;
    if (cudaMalloc(&p, sz) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky-free out-of-memory error, then retry once
      empty_cache();
      if (cudaMalloc(&p, sz) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        MG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        MG_FAIL("CUDA out of memory on cuda:", index_, ": tried to allocate ", mib(int64_t(sz)), " (",
                nbytes, " bytes); minigrad's tensors hold ", mib(counters_.current()),
                " (its cache was emptied before this retry); the GPU has ", mib(int64_t(free_b)),
                " free of ", mib(int64_t(total_b)));
      }
    }
    count(sz);
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    const size_t sz = round_size(nbytes);
    counters_.on_free(int64_t(sz));
    std::lock_guard<std::mutex> lk(mu_);
    cache_[sz].push_back(p);
    cached_ += int64_t(sz);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return counters_.stats(cached_);
  }
  void reset_peak() override { counters_.reset_peak(); }
  void empty_cache() override {
    std::lock_guard<std::mutex> lk(mu_);
    if (cached_ == 0) return;
    // blocks may still be read by queued kernels: wait for them before freeing
    MG_CUDA_CHECK(cudaSetDevice(index_));
    MG_CUDA_CHECK(cudaStreamSynchronize(stream(Device::cuda(index_))));
    for (auto& [sz, v] : cache_)
      for (void* p : v) MG_CUDA_CHECK(cudaFree(p));
    cache_.clear();
    cached_ = 0;
  }

 private:
  void count(size_t sz) { counters_.on_allocate(int64_t(sz)); }

  int index_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> cache_;
  int64_t cached_ = 0;
  AllocationCounters counters_;
};

}  // namespace

int device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return std::min(c, kMaxDevices);
  }();
  return n;
}

void set_device(Device d) {
  check_index(d);
  MG_CUDA_CHECK(cudaSetDevice(d.index));
}

const CublasApi& cublas() {
  static const CublasApi api = [] {
    void* lib = nullptr;
    for (const char* name : {"libcublas.so." MG_STR(CUBLAS_VER_MAJOR), "libcublas.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    MG_CHECK(lib, "cuda: cannot open cuBLAS (libcublas.so." MG_STR(CUBLAS_VER_MAJOR), "): ", dlerror(),
             "; add the CUDA Toolkit's lib directory to LD_LIBRARY_PATH");
    CublasApi a;
    auto load = [&](auto& fn, const char* sym) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, sym));
      MG_CHECK(fn, "cuda: cuBLAS has no ", sym);
    };
    load(a.create, "cublasCreate_v2");
    load(a.set_stream, "cublasSetStream_v2");
    load(a.sgemm_strided_batched, "cublasSgemmStridedBatched");
    load(a.dgemm_strided_batched, "cublasDgemmStridedBatched");
    load(a.status_name, "cublasGetStatusName");
    load(a.status_string, "cublasGetStatusString");
    return a;
  }();
  return api;
}

cudaStream_t stream(Device d) { return init(d).stream; }
cublasHandle_t blas(Device d) { return init(d).blas; }
void stream_synchronize(Device d) { MG_CUDA_CHECK(cudaStreamSynchronize(stream(d))); }

namespace {
Allocator& allocator_of(int index) {
  check_index(Device::cuda(index));
  static std::mutex mu;
  static std::unique_ptr<CudaAllocator> per[kMaxDevices];
  std::lock_guard<std::mutex> lk(mu);
  if (!per[index]) per[index] = std::make_unique<CudaAllocator>(index);
  return *per[index];
}
}  // namespace

bool ensure_allocator() {
  static const bool ok = [] {
    if (device_count() == 0) return false;
    register_allocator(kCUDA, &allocator_of);
    return true;
  }();
  return ok;
}

}  // namespace minigrad::cuda
