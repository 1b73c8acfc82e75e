// CUDA GEMM through cuBLAS (strided batched). minigrad's matrices are row-major views; cuBLAS is
// column-major, so C = A·B is computed as Cᵀ = Bᵀ·Aᵀ, and transposed views become transpose flags
// with their leading dimension, without copies. int64 products use a plain kernel.
#include <algorithm>

#include "../ops.h"
#include "../gemm_layout.h"
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {


__global__ void gemm_int64_kernel(int64_t n, int64_t M, int64_t N, int64_t K, int64_t alpha,
                                  int64_t beta, const int64_t* a, int64_t as0, int64_t as1, int64_t as2,
                                  const int64_t* b, int64_t bs0, int64_t bs1, int64_t bs2, int64_t* c) {
  MG_GRID_LOOP(idx, n) {
    const int64_t q = idx / (M * N), i = (idx / N) % M, j = idx % N;
    int64_t s = 0;
    for (int64_t l = 0; l < K; ++l) s += a[q * as0 + i * as1 + l * as2] * b[q * bs0 + l * bs1 + j * bs2];
    c[idx] = alpha * s + (beta == 0 ? 0 : beta * c[idx]);
  }
}

}  // namespace

void CudaBackend::gemm(const Tensor& out, const Tensor& a0, const Tensor& b0, double alpha, double beta) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a0.size(2);
  if (gemm_without_products(*this, out, K, beta)) return;
  const Device d = out.device();
  if (out.dtype() == kInt64) {
    launch("matmul (int64)", d, B * M * N, gemm_int64_kernel, M, N, K, int64_t(alpha), int64_t(beta),
           ptr<int64_t>(a0), a0.stride(0), a0.stride(1), a0.stride(2), ptr<int64_t>(b0), b0.stride(0),
           b0.stride(1), b0.stride(2), ptr<int64_t>(out));
    return;
  }
  MatLayout la = mat_layout(M, K, a0.stride(1), a0.stride(2));
  MatLayout lb = mat_layout(K, N, b0.stride(1), b0.stride(2));
  Tensor a = la.ok ? a0 : a0.contiguous();  // layouts cuBLAS cannot take are copied once
  Tensor b = lb.ok ? b0 : b0.contiguous();
  if (!la.ok) la = mat_layout(M, K, a.stride(1), a.stride(2));
  if (!lb.ok) lb = mat_layout(K, N, b.stride(1), b.stride(2));
  const cublasOperation_t opa = la.trans ? CUBLAS_OP_T : CUBLAS_OP_N, opb = lb.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  MG_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && B <= INT32_MAX, "matmul: dims (", B, ", ", M,
           ", ", N, ", ", K, ") exceed cuBLAS's int range");
  set_device(d);
  cublasHandle_t h = blas(d);
  visit_floating(out.dtype(), "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T al = T(alpha), be = T(beta);
    if constexpr (std::is_same_v<T, float>)
      MG_CUBLAS_CHECK(cublas().sgemm_strided_batched(h, opb, opa, int(N), int(M), int(K), &al, ptr<T>(b), int(lb.ld),
                                                b.stride(0), ptr<T>(a), int(la.ld), a.stride(0), &be, ptr<T>(out),
                                                int(N), M * N, int(B)));
    else
      MG_CUBLAS_CHECK(cublas().dgemm_strided_batched(h, opb, opa, int(N), int(M), int(K), &al, ptr<T>(b), int(lb.ld),
                                                b.stride(0), ptr<T>(a), int(la.ld), a.stride(0), &be, ptr<T>(out),
                                                int(N), M * N, int(B)));
  });
}

}  // namespace minigrad::cuda
