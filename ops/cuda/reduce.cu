// CUDA kernels: reductions, arg-reductions, gather/scatter_add and softmax. One thread per output
// (reductions, softmax rows), accumulating in double for floating types, as on the CPU.
#include <limits>

#include "../ops.h"
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

namespace {

template <class T>
using acc_t = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

template <class T>
__device__ acc_t<T> identity(ReduceOp op) {
  if (op == ReduceOp::Sum) return 0;
  if constexpr (std::is_floating_point_v<T>)
    return op == ReduceOp::Max ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  else
    return op == ReduceOp::Max ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
}

template <class T>
__device__ acc_t<T> combine(ReduceOp op, acc_t<T> a, acc_t<T> v) {
  if (op == ReduceOp::Sum) return a + v;
  if constexpr (std::is_floating_point_v<T>)
    if (a != a || v != v) return std::numeric_limits<double>::quiet_NaN();
  return op == ReduceOp::Max ? (v > a ? v : a) : (v < a ? v : a);
}

// out[i] = op over the reduced elements of x; `kept` maps an output to x's base offset, `red`
// walks the reduced dims from there.
template <class T>
__global__ void reduce_kernel(int64_t nout, Indexer<2> kept, Indexer<1> red, int64_t nred, ReduceOp op, T* out,
                              const T* x) {
  MG_GRID_LOOP(i, nout) {
    int64_t o[2];
    kept.offsets(i, o);
    acc_t<T> acc = identity<T>(op);
    for (int64_t j = 0; j < nred; ++j) {
      int64_t r[1];
      red.offsets(j, r);
      acc = combine<T>(op, acc, acc_t<T>(x[o[1] + r[0]]));
    }
    out[o[0]] = T(acc);
  }
}

template <class T>
__global__ void reduce_arg_kernel(int64_t nout, Indexer<3> ix, int64_t n, int64_t s, bool is_max, T* values,
                                  int64_t* indices, const T* x) {
  MG_GRID_LOOP(i, nout) {
    int64_t o[3];
    ix.offsets(i, o);
    const T* q = x + o[2];
    T best = q[0];
    int64_t bi = 0;
    for (int64_t k = 1; k < n; ++k) {
      if constexpr (std::is_floating_point_v<T>)
        if (best != best) break;  // the first NaN wins
      const T v = q[k * s];
      bool nan = false;
      if constexpr (std::is_floating_point_v<T>) nan = v != v;
      if (nan || (is_max ? v > best : v < best)) {
        best = v;
        bi = k;
      }
    }
    values[o[0]] = best;
    indices[o[1]] = bi;
  }
}

// Records the first out-of-range index (as index + 1 in *bad, 0 meaning none).
__global__ void check_index_kernel(int64_t n, Indexer<1> ix, const int64_t* index, int64_t limit,
                                   unsigned long long* bad) {
  MG_GRID_LOOP(i, n) {
    int64_t o[1];
    ix.offsets(i, o);
    const int64_t v = index[o[0]];
    if (v < 0 || v >= limit) atomicCAS(bad, 0ull, (unsigned long long)(i + 1));
  }
}

void check_index(const char* op, const Tensor& index, int64_t limit, int64_t dim) {
  Tensor bad = zeros({1}, TensorOptions(kInt64).device(index.device()));
  auto ix = make_indexer<1>(op, index.sizes(), {&index});
  launch(op, index.device(), index.numel(), check_index_kernel, ix, ptr<int64_t>(index), limit,
         reinterpret_cast<unsigned long long*>(ptr<int64_t>(bad)));
  const int64_t at = int64_t(bad.item());
  if (at == 0) return;
  const int64_t v = int64_t(index.reshape({-1}).narrow(0, at - 1, 1).item());
  MG_FAIL(op, ": index ", v, " is out of range for dim ", dim, " of size ", limit);
}

Tensor gather_base(const Tensor& x, int64_t dim, const Tensor& index) {
  Shape st = x.strides();
  st[size_t(dim)] = 0;
  return make_view(x, index.sizes(), st, x.storage_offset());
}

template <class T>
__global__ void gather_kernel(int64_t n, Indexer<3> ix, int64_t s, T* out, const int64_t* index, const T* xb) {
  MG_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    out[o[0]] = xb[o[2] + index[o[1]] * s];
  }
}


template <class T>
__global__ void scatter_add_kernel(int64_t n, Indexer<3> ix, int64_t s, T* ob, const int64_t* index, const T* src) {
  MG_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    atomic_add(ob + o[0] + index[o[1]] * s, src[o[2]]);
  }
}

struct SoftmaxGeom {
  int64_t outer = 1, n = 1, inner = 1;
  SoftmaxGeom(const Tensor& t, int64_t dim) {
    for (int64_t d = 0; d < t.dim(); ++d) (d < dim ? outer : d == dim ? n : inner) *= t.size(d);
  }
};

template <class T>
__global__ void softmax_kernel(int64_t rows, int64_t n, int64_t inner, bool log, T* out, const T* x) {
  MG_GRID_LOOP(r, rows) {
    const int64_t base = (r / inner) * n * inner + r % inner, st = inner;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = ::max(mx, x[base + i * st]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T e = ::exp(x[base + i * st] - mx);
      sum += e;
      if (!log) out[base + i * st] = e;
    }
    if (log) {
      const T lse = mx + T(::log(sum));
      for (int64_t i = 0; i < n; ++i) out[base + i * st] = x[base + i * st] - lse;
    } else {
      const T inv = T(1.0 / sum);
      for (int64_t i = 0; i < n; ++i) out[base + i * st] *= inv;
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(int64_t rows, int64_t n, int64_t inner, bool log, T* gx, const T* gy,
                                        const T* y) {
  MG_GRID_LOOP(r, rows) {
    const int64_t base = (r / inner) * n * inner + r % inner, st = inner;
    double s = 0;
    if (log) {
      for (int64_t i = 0; i < n; ++i) s += gy[base + i * st];
      for (int64_t i = 0; i < n; ++i) gx[base + i * st] = gy[base + i * st] - ::exp(y[base + i * st]) * T(s);
    } else {
      for (int64_t i = 0; i < n; ++i) s += gy[base + i * st] * y[base + i * st];
      for (int64_t i = 0; i < n; ++i) gx[base + i * st] = y[base + i * st] * (gy[base + i * st] - T(s));
    }
  }
}

}  // namespace

void CudaBackend::reduce(ReduceOp op, const Tensor& out, const Tensor& x) {
  Shape kept_strides = x.strides(), red_sizes(size_t(x.dim()), 1), red_strides(size_t(x.dim()), 0);
  for (int64_t d = 0; d < x.dim(); ++d)
    if (out.size(d) == 1 && x.size(d) != 1) {
      red_sizes[size_t(d)] = x.size(d);
      red_strides[size_t(d)] = x.stride(d);
      kept_strides[size_t(d)] = 0;
    }
  auto kept = make_indexer<2>("reduce", out.sizes(), std::array<Shape, 2>{out.strides(), kept_strides});
  auto red = make_indexer<1>("reduce", red_sizes, std::array<Shape, 1>{red_strides});
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("reduce", x.device(), out.numel(), reduce_kernel<T>, kept, red, numel_of(red_sizes), op, ptr<T>(out),
           ptr<T>(x));
  });
}

void CudaBackend::reduce_arg(ReduceOp op, const Tensor& values, const Tensor& indices, const Tensor& x,
                             int64_t dim) {
  Shape st = x.strides();
  st[size_t(dim)] = 0;
  auto ix = make_indexer<3>("reduce_arg", values.sizes(), std::array<Shape, 3>{values.strides(), indices.strides(), st});
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("reduce_arg", x.device(), values.numel(), reduce_arg_kernel<T>, ix, x.size(dim), x.stride(dim),
           op == ReduceOp::Max, ptr<T>(values), ptr<int64_t>(indices), ptr<T>(x));
  });
}

void CudaBackend::gather(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& index) {
  check_index("gather", index, x.size(dim), dim);
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor xb = gather_base(x, dim, index);
    auto ix = make_indexer<3>("gather", out.sizes(), {&out, &index, &xb});
    launch("gather", out.device(), out.numel(), gather_kernel<T>, ix, x.stride(dim), ptr<T>(out),
           ptr<int64_t>(index), ptr<T>(xb));
  });
}

void CudaBackend::scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index("scatter_add", index, out.size(dim), dim);
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor ob = gather_base(out, dim, index);
    auto ix = make_indexer<3>("scatter_add", index.sizes(), {&ob, &index, &src});
    launch("scatter_add", out.device(), index.numel(), scatter_add_kernel<T>, ix, out.stride(dim), ptr<T>(ob),
           ptr<int64_t>(index), ptr<T>(src));
  });
}

void CudaBackend::softmax(const Tensor& out, const Tensor& x, int64_t dim, bool log) {
  visit_floating(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    SoftmaxGeom g(x, dim);
    launch("softmax", x.device(), g.outer * g.inner, softmax_kernel<T>, g.n, g.inner, log, ptr<T>(out), ptr<T>(x));
  });
}

void CudaBackend::softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, int64_t dim, bool log) {
  visit_floating(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    SoftmaxGeom g(y, dim);
    launch("softmax_backward", y.device(), g.outer * g.inner, softmax_backward_kernel<T>, g.n, g.inner, log,
           ptr<T>(gx), ptr<T>(gy), ptr<T>(y));
  });
}

}  // namespace minigrad::cuda
