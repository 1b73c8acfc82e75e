// CPU GEMM through OpenBLAS. Row- or column-major views (e.g. transposes) go to cblas as
// transpose flags with their leading dimension, without copies.
#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "../../core/cpu_isa.h"
#include "../../core/parallel.h"
#include "../gemm_layout.h"
#include "cpu_backend.h"
#include "loops.h"
#include "../ops.h"

namespace minigrad {

namespace {

// OpenBLAS (Debian 12 ships 0.3.21) chooses its kernels at load time from the CPU's family and
// model, and a model newer than it knows gets its SSE3 "Prescott" kernels: on an Emerald Rapids
// Xeon (family 6, model 207, AVX-512) one core's 1024^3 sgemm ran at 32 GFLOP/s against 150 with
// its SkylakeX kernels, and every Linear, 1x1 and GEMM-path conv with it. Where OpenBLAS chose
// kernels for a lower vector level than the CPU has and OPENBLAS_CORETYPE does not name them,
// minigrad has OpenBLAS choose again, once, as that variable would: SkylakeX on AVX-512,
// Haswell on AVX2 + FMA. It uses OpenBLAS's own re-initialisation (gotoblas_dynamic_quit/init,
// present in builds with run-time kernel choice, DYNAMIC_ARCH); other BLAS builds are left alone.
// OPENBLAS_CORETYPE, when set, always wins.
// The CpuIsa level (as an int) an OpenBLAS kernel set needs: 2 AVX-512, 1 AVX2 + FMA, 0 older.
int vector_level_of_core(const std::string& core) {
  for (const char* c : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (core == c) return 2;
  for (const char* c : {"Haswell", "Zen", "Excavator"})
    if (core == c) return 1;
  return 0;
}

void choose_blas_kernels() {
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  const CpuIsa hw = cpu_isa_hardware();
  if (hw == CpuIsa::Generic || vector_level_of_core(openblas_get_corename()) >= int(hw)) return;
  const char* want = hw == CpuIsa::Avx512 ? "SkylakeX" : "Haswell";
  auto quit = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (!quit || !init) return;
  // gotoblas_dynamic_init reads the variable once, here; it is removed again right after, so child
  // processes and later getenv calls see the environment as it was
  setenv("OPENBLAS_CORETYPE", want, 1);
  quit();
  init();
  unsetenv("OPENBLAS_CORETYPE");
}

// At load time, single-threaded, after OpenBLAS's own start-up (a library's dependencies are
// initialised before it) and before any GEMM.
const bool g_blas_kernels_chosen = (choose_blas_kernels(), true);

}  // namespace

std::string blas_kernel_name() {
  (void)g_blas_kernels_chosen;
  return openblas_get_corename();
}

}  // namespace minigrad

namespace minigrad::cpu {

namespace {

// OpenBLAS runs single-threaded, each GEMM split into pieces on minigrad's threads: one pool for
// every loop (no second set of threads spinning for the cores after each GEMM), and a piece no
// thread has started yet is taken by another instead of being waited for.
// OpenBLAS's OpenMP build takes its thread count from the calling thread's OpenMP setting (and
// resets its own to it), so that is set on whichever thread is about to call it.
void blas_single_threaded() {
  if (omp_get_max_threads() != 1) omp_set_num_threads(1);
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

template <class T>
void gemm_one(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  blas_single_threaded();
  auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
                c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, TA, TB, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
                c, int(ldc));
}

// C[q] = alpha A[q] B[q] + beta C[q] for q < batch (strides sa, sb, sc between them), in pieces on
// minigrad's threads: whole matrices where they share out evenly, else each cut along m, n or k
// (one or two pieces per thread, at least 32 wide), whichever adds the least work: each piece
// of n packs all of A again (m*k), each piece of m all of B (k*n), and each piece of k past the first
// writes partial sums (m*n) that are added in piece order at the end, so the result does not
// depend on which thread ran what (a conv's weight gradient, k = its positions, cuts k). GEMMs of
// under 2^18 multiply-adds in all run in one call, as OpenBLAS would.
template <class T>
void gemm_batched(bool ta, bool tb, int64_t batch, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                  int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, T beta, T* c, int64_t ldc,
                  int64_t sc) {
  // Deterministic mode cuts as if for kDeterministicPieces / 2 threads whatever the count and
  // wherever it is called from (the pieces then run on the threads there are, or inline), so every
  // piece is the same BLAS call at any thread count: OpenBLAS's own result for an element can
  // depend on the shape of the call (its small-matrix kernels), not only the k-cut.
  const bool det = are_deterministic_algorithms_enabled();
  const int nt = det ? kDeterministicPieces / 2 : get_num_threads();
  const bool big_enough = double(batch) * double(m) * double(n) * double(k) >= 262144.0;
  const bool par = det ? big_enough : nt > 1 && !in_parallel_region() && big_enough;
  if (!par) {
    for (int64_t q = 0; q < batch; ++q)
      gemm_one<T>(ta, tb, m, n, k, alpha, a + q * sa, lda, b + q * sb, ldb, beta, c + q * sc, ldc);
    return;
  }
  enum Cut { CutM, CutN, CutK };
  const double repack_n = double(m) * double(k), repack_m = double(k) * double(n), partial_k = 2.0 * double(m) * double(n);
  const Cut cut = repack_n <= repack_m && repack_n <= partial_k ? CutN : repack_m <= partial_k ? CutM : CutK;
  const int64_t dim = cut == CutN ? n : cut == CutM ? m : k;
  // whole matrices where they share out evenly; one piece a thread for a big single matrix (the
  // least repacking: within 2% of OpenBLAS's own threads on 512-1024 squares), two for a smaller
  // one (a worker that wakes late then costs less: a 1x1 conv's per-image GEMMs)
  const bool big = double(m) * double(n) * double(k) >= 16.0 * 1024 * 1024 * nt;
  int64_t pieces = batch % nt == 0 || batch >= 4 * nt ? 1
                   : batch == 1                      ? (big ? nt : 2 * nt)
                                                     : (2 * nt + batch - 1) / batch;
  pieces = std::max<int64_t>(1, std::min(pieces, dim / 32));
  const int64_t width = (dim + pieces - 1) / pieces;
  pieces = (dim + width - 1) / width;
  // from minigrad's caching allocator (a fresh malloc of this size would be page-faulted in and
  // zeroed by the OS on every call); each partial sum is written by its GEMM (beta = 0) before it is read
  Tensor partial_buf = cut == CutK ? empty({batch * (pieces - 1) * m * n}, dtype_of<T>()) : Tensor();
  T* partial = cut == CutK ? partial_buf.data_ptr<T>() : nullptr;
  parallel_chunks(batch * pieces, [&](int64_t ch, int) {
    const int64_t q = ch / pieces, pc = ch % pieces, p0 = pc * width, len = std::min(width, dim - p0);
    const T* aq = a + q * sa;
    const T* bq = b + q * sb;
    T* cq = c + q * sc;
    switch (cut) {
      case CutN:
        gemm_one<T>(ta, tb, m, len, k, alpha, aq, lda, bq + (tb ? p0 * ldb : p0), ldb, beta, cq + p0, ldc);
        break;
      case CutM:
        gemm_one<T>(ta, tb, len, n, k, alpha, aq + (ta ? p0 : p0 * lda), lda, bq, ldb, beta, cq + p0 * ldc, ldc);
        break;
      case CutK: {
        const T* ak = aq + (ta ? p0 * lda : p0);
        const T* bk = bq + (tb ? p0 : p0 * ldb);
        if (pc == 0) gemm_one<T>(ta, tb, m, n, len, alpha, ak, lda, bk, ldb, beta, cq, ldc);
        else
          gemm_one<T>(ta, tb, m, n, len, alpha, ak, lda, bk, ldb, T(0),
                      partial + (q * (pieces - 1) + pc - 1) * m * n, n);
        break;
      }
    }
  });
  if (cut == CutK)
    for (int64_t q = 0; q < batch; ++q)
      for (int64_t pc = 1; pc < pieces; ++pc) {
        const T* src = partial + (q * (pieces - 1) + pc - 1) * m * n;
        T* cq = c + q * sc;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) cq[i * ldc + j] += src[i * n + j];
      }
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
    gemm_batched<T>(la.trans, lb.trans, B, M, N, K, T(alpha), ap, la.ld, a.stride(0), bp, lb.ld, b.stride(0),
                    T(beta), cp, N, M * N);
  });
}

}  // namespace minigrad::cpu
