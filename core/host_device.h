// minigrad: MG_HOST_DEVICE marks functions that also run on the GPU: __host__ __device__ when the
// file is compiled by nvcc, nothing otherwise.
#pragma once
#ifndef MG_HOST_DEVICE
#if defined(__CUDACC__)
#define MG_HOST_DEVICE __host__ __device__
#else
#define MG_HOST_DEVICE
#endif
#endif
