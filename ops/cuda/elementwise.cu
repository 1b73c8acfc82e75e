// CUDA kernels: copies (within a device and across host and device), fill, unary ops and their
// derivatives, relu's bit mask, binary ops, comparisons, where.
#include <cmath>
#include <limits>

#include "../ops.h"
#include "cuda_backend.h"
#include "loops.cuh"

namespace minigrad::cuda {

Backend& backend() {
  static CudaBackend b;
  return b;
}

bool ensure_registered() {
  static const bool ok = [] {
    if (!ensure_allocator()) return false;
    register_backend(kCUDA, &backend());
    register_builtin_open_convs();
    return true;
  }();
  return ok;
}

namespace {

template <class D, class S>
__global__ void copy_kernel(int64_t n, Indexer<2> ix, D* dst, const S* src) {
  MG_GRID_LOOP(i, n) {
    int64_t o[2];
    ix.offsets(i, o);
    dst[o[0]] = static_cast<D>(src[o[1]]);
  }
}

template <class T>
__global__ void fill_kernel(int64_t n, Indexer<1> ix, T* dst, T v) {
  MG_GRID_LOOP(i, n) {
    int64_t o[1];
    ix.offsets(i, o);
    dst[o[0]] = v;
  }
}

// dst = src on one device, converting the dtype, any strides.
void copy_on_device(const Tensor& dst, const Tensor& src) {
  auto ix = make_indexer<2>("copy", dst.sizes(), {&dst, &src});
  visit_any_dtype(dst.dtype(), [&](auto dt) {
    visit_any_dtype(src.dtype(), [&](auto st) {
      using D = typename decltype(dt)::type;
      using S = typename decltype(st)::type;
      launch("copy", dst.device(), dst.numel(), copy_kernel<D, S>, ix, ptr<D>(dst), ptr<S>(src));
    });
  });
}

template <class T>
__device__ T sigmoid_of(T x) {
  return x >= T(0) ? T(1) / (T(1) + ::exp(-x)) : ::exp(x) / (T(1) + ::exp(x));
}
template <class T>
__device__ T gelu_cdf(T x) { return T(0.5) * (T(1) + ::erf(x * T(0.70710678118654752))); }

template <class T>
__device__ T unary_fn(UnaryOp op, T v, T p) {
  switch (op) {
    case UnaryOp::Neg: return -v;
    case UnaryOp::Exp: return ::exp(v);
    case UnaryOp::Log: return ::log(v);
    case UnaryOp::Sqrt: return ::sqrt(v);
    case UnaryOp::Abs: return v < T(0) ? -v : v;
    case UnaryOp::Pow: return p == T(2) ? v * v : ::pow(v, p);
    case UnaryOp::Relu: return v > T(0) || v != v ? v : T(0);  // NaN stays NaN
    case UnaryOp::Sigmoid: return sigmoid_of(v);
    case UnaryOp::Tanh: return ::tanh(v);
    case UnaryOp::Gelu: return v * gelu_cdf(v);
  }
  return v;
}

template <class T>
__global__ void unary_kernel(int64_t n, Indexer<2> ix, UnaryOp op, T* out, const T* x, T p) {
  MG_GRID_LOOP(i, n) {
    int64_t o[2];
    ix.offsets(i, o);
    out[o[0]] = unary_fn(op, x[o[1]], p);
  }
}

__global__ void unary_int_kernel(int64_t n, Indexer<2> ix, bool neg, int64_t* out, const int64_t* x) {
  MG_GRID_LOOP(i, n) {
    int64_t o[2];
    ix.offsets(i, o);
    const int64_t v = x[o[1]];
    out[o[0]] = neg ? -v : (v < 0 ? -v : v);
  }
}

// x and y are read only by the ops that need them (the others pass gy's pointer and offsets).
template <class T>
__global__ void unary_backward_kernel(int64_t n, Indexer<4> ix, UnaryOp op, T* gx, const T* gy, const T* x,
                                      const T* y, T p) {
  MG_GRID_LOOP(i, n) {
    int64_t o[4];
    ix.offsets(i, o);
    const T g = gy[o[1]];
    T r = g;
    switch (op) {
      case UnaryOp::Neg: r = -g; break;
      case UnaryOp::Exp: r = g * y[o[3]]; break;
      case UnaryOp::Log: r = g / x[o[2]]; break;
      case UnaryOp::Sqrt: r = g / (T(2) * y[o[3]]); break;
      case UnaryOp::Abs: {
        const T v = x[o[2]];
        r = v > T(0) ? g : v < T(0) ? -g : T(0);
        break;
      }
      case UnaryOp::Pow: r = g * p * ::pow(x[o[2]], p - T(1)); break;
      case UnaryOp::Relu: r = y[o[3]] > T(0) ? g : T(0); break;
      case UnaryOp::Sigmoid: r = g * y[o[3]] * (T(1) - y[o[3]]); break;
      case UnaryOp::Tanh: r = g * (T(1) - y[o[3]] * y[o[3]]); break;
      case UnaryOp::Gelu: {
        const T v = x[o[2]];
        const T pdf = ::exp(T(-0.5) * v * v) * T(0.3989422804014327);
        r = g * (gelu_cdf(v) + v * pdf);
        break;
      }
    }
    gx[o[0]] = r;
  }
}

// One thread per mask byte: 8 elements of y and their sign bits.
template <class T>
__global__ void relu_mask_kernel(int64_t bytes, T* y, uint8_t* mask, const T* x, int64_t n) {
  MG_GRID_LOOP(b, bytes) {
    uint8_t bits = 0;
    for (int64_t i = 8 * b, j = 0; j < 8 && i < n; ++i, ++j) {
      const bool pos = x[i] > T(0);
      y[i] = pos || x[i] != x[i] ? x[i] : T(0);  // NaN stays NaN, as in PyTorch
      bits = uint8_t(bits | (uint8_t(pos) << j));
    }
    mask[b] = bits;
  }
}

template <class T>
__global__ void relu_mask_backward_kernel(int64_t n, T* gx, const T* gy, const uint8_t* mask) {
  MG_GRID_LOOP(i, n) gx[i] = (mask[i >> 3] >> (i & 7)) & 1 ? gy[i] : T(0);
}

template <class T>
__device__ T binary_fn(BinaryOp op, T a, T b, T alpha) {
  switch (op) {
    case BinaryOp::Add: return a + alpha * b;
    case BinaryOp::Sub: return a - alpha * b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Max:
    case BinaryOp::Min:
      if constexpr (std::is_floating_point_v<T>)
        if (a != a || b != b) return std::numeric_limits<T>::quiet_NaN();
      return op == BinaryOp::Max ? (a > b ? a : b) : (a < b ? a : b);
  }
  return a;
}

template <class T>
__global__ void binary_kernel(int64_t n, Indexer<3> ix, BinaryOp op, T* out, const T* a, const T* b, T alpha,
                              int* div_by_zero) {
  MG_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    const T bv = b[o[2]];
    if constexpr (std::is_integral_v<T>)
      if (op == BinaryOp::Div && bv == T(0)) {
        *div_by_zero = 1;
        out[o[0]] = T(0);
        continue;
      }
    out[o[0]] = binary_fn(op, a[o[1]], bv, alpha);
  }
}

template <class T>
__global__ void compare_kernel(int64_t n, Indexer<3> ix, CompareOp op, int64_t* out, const T* a, const T* b) {
  MG_GRID_LOOP(i, n) {
    int64_t o[3];
    ix.offsets(i, o);
    const T x = a[o[1]], y = b[o[2]];
    bool r = false;
    switch (op) {
      case CompareOp::Eq: r = x == y; break;
      case CompareOp::Ne: r = x != y; break;
      case CompareOp::Lt: r = x < y; break;
      case CompareOp::Le: r = x <= y; break;
      case CompareOp::Gt: r = x > y; break;
      case CompareOp::Ge: r = x >= y; break;
    }
    out[o[0]] = int64_t(r);
  }
}

template <class T, class C>
__global__ void where_kernel(int64_t n, Indexer<4> ix, T* out, const C* cond, const T* a, const T* b) {
  MG_GRID_LOOP(i, n) {
    int64_t o[4];
    ix.offsets(i, o);
    out[o[0]] = cond[o[1]] != C(0) ? a[o[2]] : b[o[3]];
  }
}

}  // namespace

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  if (dst.device() == src.device()) return copy_on_device(dst, src);
  const size_t esize = dst.element_size();
  if (dst.device().is_cpu() || src.device().is_cpu()) {
    if (src.device().is_cuda()) {
      // device -> host: convert and pack on the device, one copy down, then place on the host
      Tensor s = src.is_contiguous() && src.dtype() == dst.dtype() ? src : empty(src.sizes(), src.options().dtype(dst.dtype()));
      if (!s.is_same(src)) copy_on_device(s, src);
      Tensor h = dst.is_contiguous() ? dst : empty(dst.sizes(), dst.options());
      set_device(src.device());
      MG_CUDA_CHECK(cudaMemcpyAsync(h.raw_data(), s.raw_data(), size_t(dst.numel()) * esize,
                                    cudaMemcpyDeviceToHost, stream(src.device())));
      stream_synchronize(src.device());
      if (!h.is_same(dst)) backend_for(Device::cpu()).copy(dst, h);
    } else {
      // host -> device: convert and pack on the host, one copy up, then place on the device
      Tensor h = src.is_contiguous() && src.dtype() == dst.dtype() ? src : empty(src.sizes(), src.options().dtype(dst.dtype()));
      if (!h.is_same(src)) backend_for(Device::cpu()).copy(h, src);
      Tensor d = dst.is_contiguous() ? dst : empty(dst.sizes(), dst.options());
      set_device(dst.device());
      // from pageable memory: returns once the source is staged, so h may go right after
      MG_CUDA_CHECK(cudaMemcpyAsync(d.raw_data(), h.raw_data(), size_t(dst.numel()) * esize,
                                    cudaMemcpyHostToDevice, stream(dst.device())));
      if (!d.is_same(dst)) copy_on_device(dst, d);
    }
    return;
  }
  // between two GPUs: through the host
  Tensor h = empty(src.sizes(), src.options().device(Device::cpu()));
  copy(h, src);
  copy(dst, h);
}

void CudaBackend::fill(const Tensor& dst, double value) {
  auto ix = make_indexer<1>("fill", dst.sizes(), {&dst});
  visit_any_dtype(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("fill", dst.device(), dst.numel(), fill_kernel<T>, ix, ptr<T>(dst), static_cast<T>(value));
  });
}

void CudaBackend::unary(UnaryOp op, const Tensor& out, const Tensor& x, double p) {
  auto ix = make_indexer<2>("unary", out.sizes(), {&out, &x});
  if (x.dtype() == kInt64) {
    MG_CHECK(op == UnaryOp::Neg || op == UnaryOp::Abs, "unary op on int64 is only neg or abs");
    return launch("unary", out.device(), out.numel(), unary_int_kernel, ix, op == UnaryOp::Neg,
                  ptr<int64_t>(out), ptr<int64_t>(x));
  }
  visit_floating(x.dtype(), "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("unary", out.device(), out.numel(), unary_kernel<T>, ix, op, ptr<T>(out), ptr<T>(x), T(p));
  });
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& gx, const Tensor& gy, const Tensor& x,
                                 const Tensor& y, double p) {
  // operands an op does not read stand in as gy (never dereferenced)
  const Tensor& xs = x.defined() ? x : gy;
  const Tensor& ys = y.defined() ? y : gy;
  auto ix = make_indexer<4>("unary_backward", gx.sizes(), {&gx, &gy, &xs, &ys});
  visit_floating(gx.dtype(), "unary_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("unary_backward", gx.device(), gx.numel(), unary_backward_kernel<T>, ix, op, ptr<T>(gx), ptr<T>(gy),
           ptr<T>(xs), ptr<T>(ys), T(p));
  });
}

void CudaBackend::relu_mask(const Tensor& y, const Tensor& mask, const Tensor& x) {
  visit_floating(x.dtype(), "relu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("relu", x.device(), mask.numel(), relu_mask_kernel<T>, ptr<T>(y), ptr<uint8_t>(mask), ptr<T>(x),
           x.numel());
  });
}

void CudaBackend::relu_mask_backward(const Tensor& gx, const Tensor& gy, const Tensor& mask) {
  visit_floating(gx.dtype(), "relu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("relu_backward", gx.device(), gx.numel(), relu_mask_backward_kernel<T>, ptr<T>(gx), ptr<T>(gy),
           ptr<uint8_t>(mask));
  });
}

void CudaBackend::binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  auto ix = make_indexer<3>("binary", out.sizes(), {&out, &a, &b});
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor flag;  // set by the kernel on an integer division by zero
    int* fp = nullptr;
    if constexpr (std::is_integral_v<T>)
      if (op == BinaryOp::Div) {
        flag = zeros({1}, TensorOptions(kInt64).device(out.device()));
        fp = reinterpret_cast<int*>(ptr<int64_t>(flag));
      }
    launch("binary", out.device(), out.numel(), binary_kernel<T>, ix, op, ptr<T>(out), ptr<T>(a), ptr<T>(b),
           T(alpha), fp);
    if constexpr (std::is_integral_v<T>)
      if (op == BinaryOp::Div) MG_CHECK(flag.item() == 0, "div: integer division by zero");
  });
}

void CudaBackend::compare(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  auto ix = make_indexer<3>("compare", out.sizes(), {&out, &a, &b});
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch("compare", out.device(), out.numel(), compare_kernel<T>, ix, op, ptr<int64_t>(out), ptr<T>(a),
           ptr<T>(b));
  });
}

void CudaBackend::where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  auto ix = make_indexer<4>("where", out.sizes(), {&out, &cond, &a, &b});
  visit_dtype(out.dtype(), [&](auto tag) {
    visit_dtype(cond.dtype(), [&](auto ctag) {
      using T = typename decltype(tag)::type;
      using C = typename decltype(ctag)::type;
      launch("where", out.device(), out.numel(), where_kernel<T, C>, ix, ptr<T>(out), ptr<C>(cond), ptr<T>(a),
             ptr<T>(b));
    });
  });
}

}  // namespace minigrad::cuda
