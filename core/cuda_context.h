// minigrad: the CUDA devices this process sees, one stream and one cuBLAS handle per device.
// Every kernel and copy of a device runs on its stream, in order, so a block freed by one op can
// be reused by the next without synchronising. Compiled only in builds with the CUDA backend.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "device.h"

namespace minigrad::cuda {

// How many CUDA devices can be used (0 when there is no driver or no GPU; never throws).
int device_count();

// cuBLAS, opened with dlopen on first use: linked directly, its libraries cost every program
// (CPU-only ones included) about 200 MB of resident memory and 60 ms at start.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
  decltype(&cublasDgemmStridedBatched) dgemm_strided_batched = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};
// Throws a clear error when libcublas cannot be opened or lacks a function.
const CublasApi& cublas();
// Makes d current for this thread (cudaSetDevice) and checks its index.
void set_device(Device d);
cudaStream_t stream(Device d);
cublasHandle_t blas(Device d);
// Waits for all work queued on d's stream.
void stream_synchronize(Device d);
// Registers the CUDA caching allocator once, if a device exists; true when it is.
bool ensure_allocator();
// Registers the CUDA backend (kernels, in ops/cuda/) and the allocator; true when they are.
bool ensure_registered();

}  // namespace minigrad::cuda
