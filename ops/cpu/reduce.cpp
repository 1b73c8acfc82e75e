// CPU kernels: reductions, arg-reductions, gather/scatter_add and softmax.
#include <cmath>
#include <limits>

#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {

template <class T>
using acc_t = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

template <class T>
struct Reducer {
  ReduceOp op;
  // floating sums of contiguous runs: the CPU level's vector kernel (ops/cpu/isa/pointwise.inc)
  double (*vector_sum)(const T*, int64_t) = nullptr;
  acc_t<T> identity() const {
    if (op == ReduceOp::Sum) return 0;
    if constexpr (std::is_floating_point_v<T>)
      return op == ReduceOp::Max ? -std::numeric_limits<double>::infinity()
                                 : std::numeric_limits<double>::infinity();
    else
      return op == ReduceOp::Max ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  }
  acc_t<T> operator()(acc_t<T> a, acc_t<T> v) const {
    if (op == ReduceOp::Sum) return a + v;
    if constexpr (std::is_floating_point_v<T>)
      if (std::isnan(a) || std::isnan(v)) return std::numeric_limits<double>::quiet_NaN();
    return op == ReduceOp::Max ? (v > a ? v : a) : (v < a ? v : a);
  }
};

// Reduces n elements at p with byte stride s.
template <class T>
acc_t<T> reduce_run(const Reducer<T>& r, const char* p, int64_t s, int64_t n, acc_t<T> acc) {
  if (s == int64_t(sizeof(T))) {
    const T* q = reinterpret_cast<const T*>(p);
    if constexpr (std::is_floating_point_v<T>)
      if (r.vector_sum) return acc + r.vector_sum(q, n);
    if (r.op == ReduceOp::Sum) {
      for (int64_t i = 0; i < n; ++i) acc += acc_t<T>(q[i]);
      return acc;
    }
    for (int64_t i = 0; i < n; ++i) acc = r(acc, acc_t<T>(q[i]));
    return acc;
  }
  for (int64_t i = 0; i < n; ++i) acc = r(acc, acc_t<T>(*reinterpret_cast<const T*>(p + i * s)));
  return acc;
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& out, const Tensor& x) {
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Reducer<T> r{op};
    if constexpr (std::is_floating_point_v<T>)
      if (op == ReduceOp::Sum) r.vector_sum = typed_kernels<T>().sum;
    // Split x's dims into kept ones (iterated in parallel, one output each) and reduced ones.
    Shape kept_strides = x.strides(), red_sizes, red_strides;
    for (int64_t d = 0; d < x.dim(); ++d) {
      if (out.size(d) == 1 && x.size(d) != 1) {
        red_sizes.push_back(x.size(d));
        red_strides.push_back(x.stride(d));
        kept_strides[d] = 0;
      }
    }
    Tensor xk = make_view(x, out.sizes(), kept_strides, x.storage_offset());
    Tensor xr = make_view(x, red_sizes, red_strides, 0);
    Geometry<1> rg = coalesce<1>(red_sizes, {&xr});
    const int64_t rnd = int64_t(rg.sizes.size()), rin = rg.sizes.back(), rst = rg.strides.back()[0];
    const int64_t router = rin ? numel_of(red_sizes) / rin : 0;  // 0: empty reduction
    auto reduce_at = [&](const char* base) {
      acc_t<T> acc = r.identity();
      for (int64_t row = 0; row < router; ++row) {
        const char* p = base;
        int64_t rr = row;
        for (int64_t d = rnd - 2; d >= 0; --d) {
          p += (rr % rg.sizes[d]) * rg.strides[d][0];
          rr /= rg.sizes[d];
        }
        acc = reduce_run<T>(r, p, rst, rin, acc);
      }
      return T(acc);
    };
    const int64_t nout = out.numel();
    if (nout == 1 && numel_of(red_sizes) >= kParallelGrain && rnd == 1) {
      // One output from a long run: split the run across threads.
      const char* base = static_cast<const char*>(x.raw_data());
      // pieces added in piece order: the sum depends on the thread count only, and not on it in
      // deterministic mode (core/threading.h)
      const int nth = are_deterministic_algorithms_enabled() ? kDeterministicPieces : get_num_threads();
      std::vector<acc_t<T>> part(size_t(nth), r.identity());
      parallel_chunks(nth, [&](int64_t t, int) {
        const int64_t b = rin * t / nth, e = rin * (t + 1) / nth;
        part[size_t(t)] = reduce_run<T>(r, base + b * rst, rst, e - b, r.identity());
      });
      acc_t<T> acc = r.identity();
      for (auto v : part) acc = r(acc, v);
      *static_cast<T*>(out.raw_data()) = T(acc);
      return;
    }
    std::array<const Tensor*, 2> ts{&out, &xk};
    const bool par = nout * numel_of(red_sizes) >= kParallelGrain;
    if (par && nout > 1) {
      parallel_for(0, nout, grain_for(numel_of(red_sizes)), [&](int64_t i0_, int64_t i1_) {
        for (int64_t i = i0_; i < i1_; ++i) {
          // decode output index i into offsets for out and xk
          int64_t rem = i, oo = 0, xo = 0;
          for (int64_t d = out.dim() - 1; d >= 0; --d) {
            int64_t idx = rem % out.size(d);
            rem /= out.size(d);
            oo += idx * out.stride(d);
            xo += idx * kept_strides[d];
          }
          static_cast<T*>(out.raw_data())[oo] = reduce_at(static_cast<const char*>(x.raw_data()) + xo * int64_t(sizeof(T)));
        }
      });
      return;
    }
    for_each<2>(out.sizes(), ts, [&](const std::array<char*, 2>& p, const std::array<int64_t, 2>& s,
                                     int64_t n) {
      for (int64_t i = 0; i < n; ++i)
        *reinterpret_cast<T*>(p[0] + i * s[0]) = reduce_at(p[1] + i * s[1]);
    }, /*parallel=*/false);
  });
}

void CpuBackend::reduce_arg(ReduceOp op, const Tensor& values, const Tensor& indices,
                            const Tensor& x, int64_t dim) {
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Shape st = x.strides();
    st[size_t(dim)] = 0;
    Tensor xk = make_view(x, values.sizes(), st, x.storage_offset());
    const int64_t n = x.size(dim), s = x.stride(dim) * int64_t(sizeof(T));
    const bool is_max = op == ReduceOp::Max;
    std::array<const Tensor*, 3> ts{&values, &indices, &xk};
    for_each<3>(values.sizes(), ts, [&](const std::array<char*, 3>& p, const std::array<int64_t, 3>& ps,
                                        int64_t m) {
      for (int64_t j = 0; j < m; ++j) {
        const char* q = p[2] + j * ps[2];
        T best = *reinterpret_cast<const T*>(q);
        int64_t bi = 0;
        for (int64_t i = 1; i < n; ++i) {
          if constexpr (std::is_floating_point_v<T>)
            if (std::isnan(best)) break;
          T v = *reinterpret_cast<const T*>(q + i * s);
          bool nan = false;
          if constexpr (std::is_floating_point_v<T>) nan = std::isnan(v);
          if (nan || (is_max ? v > best : v < best)) {
            best = v;
            bi = i;
          }
        }
        *reinterpret_cast<T*>(p[0] + j * ps[0]) = best;
        *reinterpret_cast<int64_t*>(p[1] + j * ps[1]) = bi;
      }
    });
  });
}

namespace {
// A view of x with index's shape whose `dim` stride is 0: the base address for each position.
Tensor gather_base(const Tensor& x, int64_t dim, const Tensor& index) {
  Shape st = x.strides();
  st[size_t(dim)] = 0;
  return make_view(x, index.sizes(), st, x.storage_offset());
}
void check_index(const char* op, const Tensor& index, int64_t limit, int64_t dim) {
  std::array<const Tensor*, 1> ts{&index};
  int64_t bad = 0;
  bool found = false;
  for_each<1>(index.sizes(), ts, [&](const std::array<char*, 1>& p, const std::array<int64_t, 1>& s,
                                     int64_t n) {
    for (int64_t i = 0; i < n && !found; ++i) {
      int64_t v = *reinterpret_cast<const int64_t*>(p[0] + i * s[0]);
      if (v < 0 || v >= limit) {
        bad = v;
        found = true;
      }
    }
  }, /*parallel=*/false);
  MG_CHECK(!found, op, ": index ", bad, " is out of range for dim ", dim, " of size ", limit);
}
}  // namespace

void CpuBackend::gather(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) {
  check_index("gather", index, x.size(dim), dim);
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor xb = gather_base(x, dim, index);
    const int64_t s = x.stride(dim) * int64_t(sizeof(T));
    std::array<const Tensor*, 3> ts{&out, &index, &xb};
    for_each<3>(out.sizes(), ts, [s](const std::array<char*, 3>& p, const std::array<int64_t, 3>& ps,
                                     int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        int64_t k = *reinterpret_cast<const int64_t*>(p[1] + i * ps[1]);
        *reinterpret_cast<T*>(p[0] + i * ps[0]) = *reinterpret_cast<const T*>(p[2] + i * ps[2] + k * s);
      }
    });
  });
}

void CpuBackend::scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index("scatter_add", index, out.size(dim), dim);
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor ob = gather_base(out, dim, index);
    const int64_t s = out.stride(dim) * int64_t(sizeof(T));
    std::array<const Tensor*, 3> ts{&ob, &index, &src};
    // serial: several positions may add into one element
    for_each<3>(index.sizes(), ts, [s](const std::array<char*, 3>& p, const std::array<int64_t, 3>& ps,
                                       int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        int64_t k = *reinterpret_cast<const int64_t*>(p[1] + i * ps[1]);
        *reinterpret_cast<T*>(p[0] + i * ps[0] + k * s) += *reinterpret_cast<const T*>(p[2] + i * ps[2]);
      }
    }, /*parallel=*/false);
  });
}

namespace {
struct SoftmaxGeom {
  int64_t outer = 1, n = 1, inner = 1;
  SoftmaxGeom(const Tensor& t, int64_t dim) {
    for (int64_t d = 0; d < t.dim(); ++d) (d < dim ? outer : d == dim ? n : inner) *= t.size(d);
  }
};
}  // namespace

void CpuBackend::softmax(const Tensor& out, const Tensor& x, int64_t dim, bool log) {
  visit_floating(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    SoftmaxGeom g(x, dim);
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    const int64_t rows = g.outer * g.inner;
    if (g.inner == 1) {  // contiguous rows: the CPU level's vector kernel (ops/cpu/isa/pointwise.inc)
      const auto& k = typed_kernels<T>();
      parallel_for(0, rows, grain_for(g.n), [&](int64_t r0_, int64_t r1_) {
        for (int64_t r = r0_; r < r1_; ++r) k.softmax_row(op + r * g.n, xp + r * g.n, g.n, log);
      });
      return;
    }
    parallel_for(0, rows, grain_for(g.n), [&](int64_t r0_, int64_t r1_) {
      for (int64_t r = r0_; r < r1_; ++r) {
        const int64_t base = (r / g.inner) * g.n * g.inner + r % g.inner, st = g.inner;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t i = 0; i < g.n; ++i) mx = std::max(mx, xp[base + i * st]);
        double sum = 0;
        for (int64_t i = 0; i < g.n; ++i) {
          T e = std::exp(xp[base + i * st] - mx);
          sum += e;
          if (!log) op[base + i * st] = e;
        }
        if (log) {
          T lse = mx + T(std::log(sum));
          for (int64_t i = 0; i < g.n; ++i) op[base + i * st] = xp[base + i * st] - lse;
        } else {
          T inv = T(1.0 / sum);
          for (int64_t i = 0; i < g.n; ++i) op[base + i * st] *= inv;
        }
      }
    });
  });
}

void CpuBackend::softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, int64_t dim,
                                  bool log) {
  visit_floating(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    SoftmaxGeom g(y, dim);
    const T* gyp = gy.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    T* gxp = gx.data_ptr<T>();
    const int64_t rows = g.outer * g.inner;
    if (g.inner == 1) {
      const auto& k = typed_kernels<T>();
      parallel_for(0, rows, grain_for(g.n), [&](int64_t r0_, int64_t r1_) {
        for (int64_t r = r0_; r < r1_; ++r) k.softmax_row_backward(gxp + r * g.n, gyp + r * g.n, yp + r * g.n, g.n, log);
      });
      return;
    }
    parallel_for(0, rows, grain_for(g.n), [&](int64_t r0_, int64_t r1_) {
      for (int64_t r = r0_; r < r1_; ++r) {
        const int64_t base = (r / g.inner) * g.n * g.inner + r % g.inner, st = g.inner;
        double s = 0;
        if (log) {
          for (int64_t i = 0; i < g.n; ++i) s += gyp[base + i * st];
          for (int64_t i = 0; i < g.n; ++i)
            gxp[base + i * st] = gyp[base + i * st] - std::exp(yp[base + i * st]) * T(s);
        } else {
          for (int64_t i = 0; i < g.n; ++i) s += gyp[base + i * st] * yp[base + i * st];
          for (int64_t i = 0; i < g.n; ++i)
            gxp[base + i * st] = yp[base + i * st] * (gyp[base + i * st] - T(s));
        }
      }
    });
  });
}

}  // namespace minigrad::cpu
