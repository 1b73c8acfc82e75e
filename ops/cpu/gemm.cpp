// CPU GEMM through OpenBLAS. Row- or column-major views (e.g. transposes) go to cblas as
// transpose flags with their leading dimension, without copies.
#include <cblas.h>

#include <string>

#include "../gemm_layout.h"
#include "cpu_backend.h"
#include "loops.h"
#include "../ops.h"

namespace minigrad {

std::string blas_kernel_name() { return openblas_get_corename(); }

}  // namespace minigrad

namespace minigrad::cpu {

namespace {


template <class T>
void gemm_one(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
                c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, TA, TB, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
                c, int(ldc));
}

}  // namespace

void CpuBackend::gemm(const Tensor& out, const Tensor& a0, const Tensor& b0, double alpha, double beta) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a0.size(2);
  if (gemm_without_products(*this, out, K, beta)) return;
  MatLayout la = mat_layout(M, K, a0.stride(1), a0.stride(2));
  MatLayout lb = mat_layout(K, N, b0.stride(1), b0.stride(2));
  // Layouts BLAS cannot take (e.g. both strides > 1) are copied once.
  Tensor a = la.ok ? a0 : a0.contiguous();
  Tensor b = lb.ok ? b0 : b0.contiguous();
  if (!la.ok) la = mat_layout(M, K, a.stride(1), a.stride(2));
  if (!lb.ok) lb = mat_layout(K, N, b.stride(1), b.stride(2));
  if (out.dtype() == kInt64) {  // no BLAS for integers: a plain loop
    const int64_t* ap = a.data_ptr<int64_t>();
    const int64_t* bp = b.data_ptr<int64_t>();
    int64_t* cp = out.data_ptr<int64_t>();
    for (int64_t q = 0; q < B; ++q)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          int64_t s = 0;
          for (int64_t l = 0; l < K; ++l)
            s += ap[q * a.stride(0) + i * a.stride(1) + l * a.stride(2)] *
                 bp[q * b.stride(0) + l * b.stride(1) + j * b.stride(2)];
          int64_t& c = cp[(q * M + i) * N + j];
          c = int64_t(alpha) * s + (beta == 0.0 ? 0 : int64_t(beta) * c);
        }
    return;
  }
  visit_floating(out.dtype(), "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* ap = a.data_ptr<T>();
    const T* bp = b.data_ptr<T>();
    T* cp = out.data_ptr<T>();
    for (int64_t q = 0; q < B; ++q)
      gemm_one<T>(la.trans, lb.trans, M, N, K, T(alpha), ap + q * a.stride(0), la.ld,
                  bp + q * b.stride(0), lb.ld, T(beta), cp + q * M * N, N);
  });
}

}  // namespace minigrad::cpu
