// minigrad: checks for every CUDA runtime and cuBLAS call. A failure throws minigrad::Error with
// the failing statement, the file and line, and CUDA's own name and text for the error.
// Compiled only in builds with the CUDA backend.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_context.h"
#include "error.h"

#define MG_CUDA_CHECK(stmt)                                                                       \
  do {                                                                                            \
    const cudaError_t mg_err_ = (stmt);                                                           \
    MG_CHECK(mg_err_ == cudaSuccess, "CUDA error ", cudaGetErrorName(mg_err_), " (",              \
             cudaGetErrorString(mg_err_), ") in `", #stmt, "` at ", __FILE__, ":", __LINE__);     \
  } while (0)

// cuBLAS is opened at run time (core/cuda_context.h): its status text comes through that table.
#define MG_CUBLAS_CHECK(stmt)                                                                     \
  do {                                                                                            \
    const cublasStatus_t mg_st_ = (stmt);                                                         \
    MG_CHECK(mg_st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS error ",                                    \
             ::minigrad::cuda::cublas().status_name(mg_st_), " (",                                \
             ::minigrad::cuda::cublas().status_string(mg_st_), ") in `", #stmt, "` at ", __FILE__, \
             ":", __LINE__);                                                                      \
  } while (0)

// After every kernel launch: a bad configuration is reported here, with the kernel's name.
#define MG_CUDA_LAUNCH_CHECK(kernel_name)                                                         \
  do {                                                                                            \
    const cudaError_t mg_err_ = cudaGetLastError();                                               \
    MG_CHECK(mg_err_ == cudaSuccess, "CUDA error ", cudaGetErrorName(mg_err_), " (",              \
             cudaGetErrorString(mg_err_), ") launching ", kernel_name, " at ", __FILE__, ":",     \
             __LINE__);                                                                           \
  } while (0)
