#include "open_conv.h"

#include <cmath>
#include <mutex>
#include <string>
#include <unordered_map>

#include "backend.h"

namespace minigrad::open_conv_detail {

namespace {
struct Key {
  std::type_index c, r;
  DType t;
  bool operator==(const Key& o) const { return c == o.c && r == o.r && t == o.t; }
};
struct KeyHash {
  size_t operator()(const Key& k) const { return k.c.hash_code() * 31 + k.r.hash_code() * 7 + size_t(k.t); }
};
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<Key, CudaOpenConvKernels, KeyHash>& registry() {
  static std::unordered_map<Key, CudaOpenConvKernels, KeyHash> r;
  return r;
}
}  // namespace

void register_cuda_open_conv(std::type_index combine, std::type_index reduce, DType dtype, CudaOpenConvKernels k) {
  std::lock_guard<std::mutex> lk(registry_mutex());
  registry()[Key{combine, reduce, dtype}] = k;
}

const CudaOpenConvKernels* find_cuda_open_conv(std::type_index combine, std::type_index reduce, DType dtype) {
  std::lock_guard<std::mutex> lk(registry_mutex());
  auto it = registry().find(Key{combine, reduce, dtype});
  return it == registry().end() ? nullptr : &it->second;
}

const CudaOpenConvKernels& cuda_kernels_for(const Tensor& x, std::type_index combine, std::type_index reduce,
                                            bool builtin_reduction) {
  (void)backend_for(x.device());  // a clear error without CUDA; registers the built-in kernels
  const std::string cn = autograd::detail::demangle(combine.name()), rn = autograd::detail::demangle(reduce.name());
  MG_CHECK(builtin_reduction, "open_conv2d: user reduce functors (", rn, ") run on the CPU only so far; ",
           "use Reduce::Sum, Max or Min on ", x.device());
  const CudaOpenConvKernels* k = find_cuda_open_conv(combine, reduce, x.dtype());
  MG_CHECK(k, "open_conv2d: no CUDA kernel for combine ", cn, " with ", rn, " (", x.dtype(), ") in this program; "
           "compile a .cu file that includes ops/cuda/open_conv.cuh and says MG_CUDA_OPEN_CONV(", cn, ")");
  return *k;
}

Tensor run_patch_hook(const TensorFn& patch, const Tensor& cols) {
  const Shape want{1, cols.numel() / cols.size(-1), cols.size(-1)};
  Tensor in = cols.dim() == 3 ? cols : cols.view(want);
  Tensor out = patch(in);
  MG_CHECK(out.defined() && out.sizes() == want, "open_conv2d: the patch hook changed the columns' shape from ",
           want, " to ", out.defined() ? out.sizes() : Shape{},
           "; it must map each tile of columns (1, Cin*kh*kw, L) to the same shape");
  MG_CHECK(out.dtype() == cols.dtype() && out.device() == cols.device(), "open_conv2d: the patch hook returned ",
           out.dtype(), " on ", out.device(), " for columns of ", cols.dtype(), " on ", cols.device());
  return out;
}

void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  backend_for(out.device()).gemm(out.unsqueeze(0), a.unsqueeze(0), b.unsqueeze(0), alpha, beta);
}

void gemm_forward_tile(const Tensor& P, const Tensor& w, const Tensor& out, const Plan& p) {
  Tensor w2 = w.view({p.Cout, p.K});
  for (int64_t g = 0; g < p.G; ++g)
    gemm_into(out.narrow(0, g * p.Og, p.Og), w2.narrow(0, g * p.Og, p.Og), P.narrow(0, g * p.K, p.K), 1.0, 0.0);
}

void gemm_backward_tile(const Tensor& P, const Tensor& w, const Tensor& gy, const Tensor& dw, const Tensor& dP,
                        const Plan& p) {
  Tensor w2 = w.view({p.Cout, p.K});
  Tensor dw2 = dw.defined() ? dw.view({p.Cout, p.K}) : Tensor();
  for (int64_t g = 0; g < p.G; ++g) {
    Tensor gyg = gy.narrow(0, g * p.Og, p.Og), Pg = P.narrow(0, g * p.K, p.K);
    if (dw2.defined()) gemm_into(dw2.narrow(0, g * p.Og, p.Og), gyg, Pg.t(), 1.0, 1.0);
    if (dP.defined()) gemm_into(dP.narrow(0, g * p.K, p.K), w2.narrow(0, g * p.Og, p.Og).t(), gyg, 1.0, 0.0);
  }
}

bool rows_identical(const Tensor& w, int64_t groups) {
  Tensor r = w.detach().contiguous().view({groups, w.size(0) / groups, -1});
  return allclose(r, r.narrow(1, 0, 1).expand(r.sizes()), 0.0, 0.0);
}

void check_separable_sample(const std::string& name, double x, double w, double combined, double separated) {
  MG_CHECK(std::abs(combined - separated) <= 1e-9 * (1.0 + std::abs(combined)), "open_conv2d: combine functor ",
           name, " declares a separable form sum_i f(i, x) * g(i, w) that disagrees with its operator() at x=", x,
           ", w=", w, ": ", separated, " vs ", combined);
}

}  // namespace minigrad::open_conv_detail
