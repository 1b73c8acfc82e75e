#include "open_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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

bool same_over_channels(const Tensor& r) {
  Tensor v = r.detach().contiguous().view({r.size(0), r.size(1), -1});
  return allclose(v, v.narrow(1, 0, 1).expand(v.sizes()), 0.0, 0.0);
}

void check_separable_sample(const std::string& name, double x, double w, double combined, double separated) {
  // Outside the functor's domain (log of a negative x) both sides are NaN, and equal infinities agree.
  const bool both_nan = std::isnan(combined) && std::isnan(separated);
  MG_CHECK(both_nan || combined == separated || std::abs(combined - separated) <= 1e-9 * (1.0 + std::abs(combined)),
           "open_conv2d: combine functor ",
           name, " declares a separable form sum_i f(i, x) * g(i, w) that disagrees with its operator() at x=", x,
           ", w=", w, ": ", separated, " vs ", combined);
}

namespace {
// Rank of the samples M (rows x values, cols w values) by Gaussian elimination with complete
// pivoting, up to kMaxDetectedTerms pivots; the pivots' rows and columns, or false when the rank
// is higher (or a sample is not finite).
bool pivots(std::vector<double> m, int rows, int cols, std::vector<int>& pi, std::vector<int>& pj) {
  double top = 0;
  for (double v : m) {
    if (!std::isfinite(v)) return false;
    top = std::max(top, std::abs(v));
  }
  pi.clear();
  pj.clear();
  if (top == 0) return true;  // zero on every sample: no terms
  std::vector<char> used_r(size_t(rows), 0), used_c(size_t(cols), 0);
  for (;;) {
    int bi = -1, bj = -1;
    double best = 0;
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        if (!used_r[size_t(i)] && !used_c[size_t(j)] && std::abs(m[size_t(i * cols + j)]) > best) {
          best = std::abs(m[size_t(i * cols + j)]);
          bi = i;
          bj = j;
        }
    if (bi < 0 || best <= 1e-11 * top) return true;  // the rest is rounding: rank found
    if (int(pi.size()) == kMaxDetectedTerms) return false;
    pi.push_back(bi);
    pj.push_back(bj);
    used_r[size_t(bi)] = used_c[size_t(bj)] = 1;
    const double piv = m[size_t(bi * cols + bj)];
    for (int i = 0; i < rows; ++i) {
      if (i == bi) continue;
      const double f = m[size_t(i * cols + bj)] / piv;
      for (int j = 0; j < cols; ++j) m[size_t(i * cols + j)] -= f * m[size_t(bi * cols + j)];
    }
  }
}

// Points spread over [lo, hi] at irregular fractions (no grid a periodic functor could hide in).
std::vector<double> spread(double lo, double hi, std::initializer_list<double> fractions) {
  std::vector<double> v;
  for (double t : fractions) v.push_back(lo + (hi - lo) * t);
  return v;
}
}  // namespace

void data_summary(const Tensor& t, double& lo, double& hi, std::vector<double>& some) {
  Tensor c = t.detach().contiguous();
  lo = std::numeric_limits<double>::infinity();
  hi = -lo;
  some.clear();
  visit_floating(c.dtype(), "open_conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = c.data_ptr<T>();
    const int64_t n = c.numel();
    // One pass in parallel chunks: min, max, and whether all are finite (by the exponent bits).
    constexpr int64_t chunk = int64_t(1) << 15;
    const int64_t chunks = (n + chunk - 1) / chunk;
    std::vector<T> mns(static_cast<size_t>(chunks)), mxs(static_cast<size_t>(chunks));
    std::vector<char> fin(static_cast<size_t>(chunks));
    parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        T mn = std::numeric_limits<T>::infinity(), mx = -mn;
        using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
        constexpr U e = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
        U bad = 0;
        const int64_t i1 = std::min(n, (c + 1) * chunk);
        // (vectorised: a NaN makes min/max lane-order dependent, but then `bad` is set and they are unused)
#pragma omp simd reduction(min : mn) reduction(max : mx) reduction(| : bad)
        for (int64_t i = c * chunk; i < i1; ++i) {
          const T v = p[i];
          U b;
          std::memcpy(&b, &v, sizeof b);
          mn = v < mn ? v : mn;
          mx = v > mx ? v : mx;
          bad |= U((b & e) == e);  // NaN or an infinity: every exponent bit set
        }
        mns[size_t(c)] = mn;
        mxs[size_t(c)] = mx;
        fin[size_t(c)] = bad == 0;
      }
    });
    T mn = std::numeric_limits<T>::infinity(), mx = -mn;
    bool finite = true;
    for (int64_t c = 0; c < chunks; ++c) {
      mn = std::min(mn, mns[size_t(c)]);
      mx = std::max(mx, mxs[size_t(c)]);
      finite = finite && fin[size_t(c)];
    }
    if (!finite) {  // NaN or inf in the data: no form is trusted, the fused kernel carries them
      lo = -std::numeric_limits<double>::infinity();
      return;
    }
    lo = double(mn);
    hi = double(mx);
    const int64_t step = std::max<int64_t>(1, n / 16);
    for (int64_t i = 0; i < n; i += step) some.push_back(double(p[i]));
  });
}

SeparableSkeleton detect_separable_form(const CombineSampler& c, double xlo, double xhi, double wlo, double whi,
                                        const std::vector<double>& xdata, const std::vector<double>& wdata) {
  SeparableSkeleton sk;
  if (!(std::isfinite(xlo) && std::isfinite(xhi) && std::isfinite(wlo) && std::isfinite(whi))) return sk;
  // Samples: over the data's range, with 0 (the padding) among the patch values.
  std::vector<double> xs = spread(xlo, xhi, {0.0, 0.083, 0.21, 0.34, 0.47, 0.58, 0.71, 0.86, 1.0});
  std::vector<double> ws = spread(wlo, whi, {0.0, 0.11, 0.23, 0.37, 0.52, 0.63, 0.77, 0.91, 1.0});
  xs.push_back(0.0);
  const int R = int(xs.size()), Cn = int(ws.size());
  std::vector<double> m(size_t(R * Cn));
  double v, dx, dw;
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < Cn; ++j) {
      c(xs[size_t(i)], ws[size_t(j)], v, dx, dw);
      m[size_t(i * Cn + j)] = v;
    }
  std::vector<int> pi, pj;
  if (!pivots(m, R, Cn, pi, pj)) return sk;
  const int r = int(pi.size());
  // A (r x r) = c(xs[pi[a]], ws[pj[b]]); its inverse by Gauss-Jordan with partial pivoting.
  double a[kMaxDetectedTerms][2 * kMaxDetectedTerms] = {};
  for (int i = 0; i < r; ++i) {
    for (int j = 0; j < r; ++j) a[i][j] = m[size_t(pi[size_t(i)] * Cn + pj[size_t(j)])];
    a[i][r + i] = 1;
  }
  for (int col = 0; col < r; ++col) {
    int piv = col;
    for (int i = col + 1; i < r; ++i)
      if (std::abs(a[i][col]) > std::abs(a[piv][col])) piv = i;
    if (a[piv][col] == 0) return sk;
    std::swap(a[piv], a[col]);
    const double d = a[col][col];
    for (int j = 0; j < 2 * r; ++j) a[col][j] /= d;
    for (int i = 0; i < r; ++i) {
      if (i == col) continue;
      const double f = a[i][col];
      for (int j = 0; j < 2 * r; ++j) a[i][j] -= f * a[col][j];
    }
  }
  SeparableSkeleton cand;
  cand.terms = r;
  for (int b = 0; b < r; ++b) {
    cand.xs[b] = xs[size_t(pi[b])];
    cand.ws[b] = ws[size_t(pj[b])];
  }
  // c(x, w) ~ sum_b c(x, ws_b) g_b(w), g_b(w) = sum_a Ainv[b][a] c(xs_a, w): the rows of Ainv
  // (A indexed [a = pivot row][b = pivot column]) are the columns' coefficients.
  for (int b = 0; b < r; ++b)
    for (int aa = 0; aa < r; ++aa) cand.ainv[b][aa] = a[b][r + aa];
  // Verify the value and both derivatives at other points: the range's ends, 0, fractions the
  // samples did not use, and values of the data itself.
  std::vector<double> xv = spread(xlo, xhi, {0.0, 0.031, 0.152, 0.29, 0.405, 0.535, 0.66, 0.79, 0.93, 1.0});
  std::vector<double> wv = spread(wlo, whi, {0.0, 0.045, 0.17, 0.28, 0.43, 0.55, 0.68, 0.82, 0.95, 1.0});
  xv.push_back(0.0);
  xv.insert(xv.end(), xdata.begin(), xdata.end());
  wv.insert(wv.end(), wdata.begin(), wdata.end());
  // f_b(x) = c(x, ws_b) and f_b'(x) once per patch value, g_b(w) and g_b'(w) once per weight.
  const size_t nx = xv.size();
  std::vector<double> f(nx * size_t(r)), fd(nx * size_t(r));
  for (size_t i = 0; i < nx; ++i)
    for (int b = 0; b < r; ++b) c(xv[i], cand.ws[b], f[i * size_t(r) + size_t(b)], fd[i * size_t(r) + size_t(b)], dw);
  double gw[kMaxDetectedTerms], gdw[kMaxDetectedTerms], cw[kMaxDetectedTerms], cdw[kMaxDetectedTerms];
  for (double w : wv) {
    for (int aa = 0; aa < r; ++aa) c(cand.xs[aa], w, cw[aa], dx, cdw[aa]);
    for (int b = 0; b < r; ++b) {
      gw[b] = gdw[b] = 0;
      for (int aa = 0; aa < r; ++aa) {
        gw[b] += cand.ainv[b][aa] * cw[aa];
        gdw[b] += cand.ainv[b][aa] * cdw[aa];
      }
    }
    for (size_t i = 0; i < nx; ++i) {
      double vv, vdx, vdw, sv = 0, sdx = 0, sdw = 0, mag = 0;
      c(xv[i], w, vv, vdx, vdw);
      for (int b = 0; b < r; ++b) {
        const double fb = f[i * size_t(r) + size_t(b)], fdb = fd[i * size_t(r) + size_t(b)];
        sv += fb * gw[b];
        sdx += fdb * gw[b];
        sdw += fb * gdw[b];
        mag += std::abs(fb * gw[b]) + std::abs(fdb * gw[b]) + std::abs(fb * gdw[b]);
      }
      const double tol = 1e-8 * (std::abs(vv) + std::abs(vdx) + std::abs(vdw) + mag) + 1e-300;
      if (!std::isfinite(vv) || !std::isfinite(vdx) || !std::isfinite(vdw) || std::abs(vv - sv) > tol ||
          std::abs(vdx - sdx) > tol || std::abs(vdw - sdw) > tol)
        return sk;
    }
  }
  return cand;
}

}  // namespace minigrad::open_conv_detail
