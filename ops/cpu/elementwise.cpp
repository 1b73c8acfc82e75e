// CPU kernels: copy, fill, unary ops and their derivatives, binary ops, comparisons, where.
#include <cmath>

#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

Backend& backend() {
  static CpuBackend b;
  return b;
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  visit_any_dtype(dst.dtype(), [&](auto dt) {
    visit_any_dtype(src.dtype(), [&](auto st) {
      using D = typename decltype(dt)::type;
      using S = typename decltype(st)::type;
      if constexpr (std::is_same_v<D, S>) {
        std::array<const Tensor*, 2> ts{&dst, &src};
        for_each<2>(dst.sizes(), ts, [](const std::array<char*, 2>& p, const std::array<int64_t, 2>& s,
                                        int64_t n) {
          if (s[0] == int64_t(sizeof(D)) && s[1] == int64_t(sizeof(D)))
            std::memcpy(p[0], p[1], size_t(n) * sizeof(D));
          else
            for (int64_t i = 0; i < n; ++i)
              *reinterpret_cast<D*>(p[0] + i * s[0]) = *reinterpret_cast<const D*>(p[1] + i * s[1]);
        });
      } else {
        map<D, S>(dst, [](S v) { return static_cast<D>(v); }, src);
      }
    });
  });
}

void CpuBackend::fill(const Tensor& dst, double value) {
  visit_any_dtype(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = static_cast<T>(value);
    map<T>(dst, [v]() { return v; });
  });
}

namespace {

// Runs kernel(ptrs, n) on every run of for_each over ts (the output first, then the inputs):
// contiguous runs in place, strided ones through contiguous copies of 256 elements at a time, so
// every element goes through the same vector kernel.
template <class T, size_t N, class K>
void through_contiguous(const std::array<const Tensor*, N>& ts, K&& kernel) {
  for_each<N>(ts[0]->sizes(), ts, [&](const std::array<char*, N>& ptr, const std::array<int64_t, N>& s, int64_t n) {
    std::array<T*, N> p;
    bool contiguous = true;
    for (size_t k = 0; k < N; ++k) {
      p[k] = reinterpret_cast<T*>(ptr[k]);
      contiguous = contiguous && s[k] == int64_t(sizeof(T));
    }
    if (contiguous) return kernel(p, n);
    constexpr int64_t B = 256;
    T buf[N][B];
    std::array<T*, N> b;
    for (size_t k = 0; k < N; ++k) b[k] = buf[k];
    for (int64_t i0 = 0; i0 < n; i0 += B) {
      const int64_t m = std::min<int64_t>(B, n - i0);
      for (size_t k = 1; k < N; ++k)
        for (int64_t i = 0; i < m; ++i) buf[k][i] = *reinterpret_cast<const T*>(ptr[k] + (i0 + i) * s[k]);
      kernel(b, m);
      for (int64_t i = 0; i < m; ++i) *reinterpret_cast<T*>(ptr[0] + (i0 + i) * s[0]) = buf[0][i];
    }
  });
}

// exp, log, tanh, sigmoid, gelu and x^p (p != 2) on floating tensors: the CPU level's vector
// functions (ops/cpu/isa/pointwise.inc). False for the other ops.
template <class T>
bool vector_transcendental(UnaryOp op, const Tensor& out, const Tensor& x, double p) {
  Transcendental f;
  switch (op) {
    case UnaryOp::Exp: f = Transcendental::Exp; break;
    case UnaryOp::Log: f = Transcendental::Log; break;
    case UnaryOp::Tanh: f = Transcendental::Tanh; break;
    case UnaryOp::Sigmoid: f = Transcendental::Sigmoid; break;
    case UnaryOp::Gelu: f = Transcendental::Gelu; break;
    case UnaryOp::Pow:
      if (p == 2.0) return false;
      f = Transcendental::Pow;
      break;
    default: return false;
  }
  const auto& k = typed_kernels<T>();
  through_contiguous<T, 2>({&out, &x}, [&](const std::array<T*, 2>& q, int64_t n) {
    k.transcendental(f, q[0], q[1], T(p), n);
  });
  return true;
}

// gelu's and x^p's backward (p != 2), the same way.
template <class T>
bool vector_transcendental_backward(UnaryOp op, const Tensor& gx, const Tensor& gy, const Tensor& x, double p) {
  if (op != UnaryOp::Gelu && !(op == UnaryOp::Pow && p != 2.0)) return false;
  const auto& k = typed_kernels<T>();
  through_contiguous<T, 3>({&gx, &gy, &x}, [&](const std::array<T*, 3>& q, int64_t n) {
    if (op == UnaryOp::Gelu) k.gelu_backward(q[0], q[1], q[2], n);
    else k.pow_backward(q[0], q[1], q[2], T(p), n);
  });
  return true;
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& out, const Tensor& x, double p) {
  if (x.dtype() == kInt64) {
    MG_CHECK(op == UnaryOp::Neg || op == UnaryOp::Abs, "unary op on int64 is only neg or abs");
    if (op == UnaryOp::Neg) map<int64_t, int64_t>(out, [](int64_t v) { return -v; }, x);
    else map<int64_t, int64_t>(out, [](int64_t v) { return v < 0 ? -v : v; }, x);
    return;
  }
  visit_floating(x.dtype(), "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vector_transcendental<T>(op, out, x, p)) return;  // exp, log, tanh, sigmoid, gelu, pow
    switch (op) {
      case UnaryOp::Neg: return map<T, T>(out, [](T v) { return -v; }, x);
      case UnaryOp::Sqrt: return map<T, T>(out, [](T v) { return std::sqrt(v); }, x);
      case UnaryOp::Abs: return map<T, T>(out, [](T v) { return std::abs(v); }, x);
      case UnaryOp::Pow: return map<T, T>(out, [](T v) { return v * v; }, x);  // p == 2
      case UnaryOp::Relu: return map<T, T>(out, [](T v) { return v > T(0) || v != v ? v : T(0); }, x);
      case UnaryOp::Exp:
      case UnaryOp::Log:
      case UnaryOp::Sigmoid:
      case UnaryOp::Tanh:
      case UnaryOp::Gelu: break;  // taken above
    }
  });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& gx, const Tensor& gy, const Tensor& x,
                                const Tensor& y, double p) {
  visit_floating(gx.dtype(), "unary_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (vector_transcendental_backward<T>(op, gx, gy, x, p)) return;  // gelu, pow but p == 2
    switch (op) {
      case UnaryOp::Neg: return map<T, T>(gx, [](T g) { return -g; }, gy);
      case UnaryOp::Exp: return map<T, T, T>(gx, [](T g, T yv) { return g * yv; }, gy, y);
      case UnaryOp::Log: return map<T, T, T>(gx, [](T g, T xv) { return g / xv; }, gy, x);
      case UnaryOp::Sqrt: return map<T, T, T>(gx, [](T g, T yv) { return g / (T(2) * yv); }, gy, y);
      case UnaryOp::Abs:
        return map<T, T, T>(gx, [](T g, T xv) { return xv > T(0) ? g : xv < T(0) ? -g : T(0); }, gy, x);
      case UnaryOp::Pow: return map<T, T, T>(gx, [](T g, T xv) { return g * T(2) * xv; }, gy, x);  // p == 2
      case UnaryOp::Relu: MG_FAIL("unary_backward: relu's backward is relu_mask_backward"); break;
      case UnaryOp::Sigmoid:
        return map<T, T, T>(gx, [](T g, T yv) { return g * yv * (T(1) - yv); }, gy, y);
      case UnaryOp::Tanh: return map<T, T, T>(gx, [](T g, T yv) { return g * (T(1) - yv * yv); }, gy, y);
      case UnaryOp::Gelu: break;  // taken above
    }
  });
}

namespace {

// Runs f(b0, b1) over the mask's bytes, in chunks of 4096 bytes (32768 elements) across threads.
template <class F>
void over_mask_bytes(int64_t n, F&& f) {
  const int64_t bytes = (n + 7) / 8, chunk = 4096, chunks = (bytes + chunk - 1) / chunk;
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) f(c * chunk, std::min(bytes, (c + 1) * chunk));
  });
}

}  // namespace

void CpuBackend::relu_mask(const Tensor& y, const Tensor& mask, const Tensor& x) {
  visit_floating(x.dtype(), "relu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data_ptr<T>();
    T* yp = y.data_ptr<T>();
    uint8_t* mp = mask.data_ptr<uint8_t>();
    const int64_t n = x.numel();
    const auto& k = typed_kernels<T>();  // the running ISA level's (ops/cpu/isa/)
    over_mask_bytes(n, [&](int64_t b0, int64_t b1) { k.relu_mask(xp, yp, mp, b0, b1, n); });
  });
}

void CpuBackend::relu_mask_backward(const Tensor& gx, const Tensor& gy, const Tensor& mask) {
  visit_floating(gx.dtype(), "relu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gyp = gy.data_ptr<T>();
    T* gxp = gx.data_ptr<T>();
    const uint8_t* mp = mask.data_ptr<uint8_t>();
    const int64_t n = gx.numel();
    const auto& k = typed_kernels<T>();
    over_mask_bytes(n, [&](int64_t b0, int64_t b1) { k.relu_mask_backward(gyp, gxp, mp, b0, b1, n); });
  });
}

namespace {
template <class T>
T maxv(T a, T b) {
  if constexpr (std::is_floating_point_v<T>)
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  return a > b ? a : b;
}
template <class T>
T minv(T a, T b) {
  if constexpr (std::is_floating_point_v<T>)
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  return a < b ? a : b;
}
}  // namespace

namespace {

// Floating add, sub, mul and div: runs whose output is contiguous and whose inputs are contiguous
// or one repeated value go to the CPU level's vector kernel (ops/cpu/isa/pointwise.inc), the rest
// to the same arithmetic here. False for other ops.
template <class T>
bool vector_arith(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, T al) {
  Arith ar;
  switch (op) {
    case BinaryOp::Add: ar = Arith::Add; break;
    case BinaryOp::Sub: ar = Arith::Sub; break;
    case BinaryOp::Mul: ar = Arith::Mul; break;
    case BinaryOp::Div: ar = Arith::Div; break;
    default: return false;
  }
  const auto& k = typed_kernels<T>();
  std::array<const Tensor*, 3> ts{&out, &a, &b};
  for_each<3>(out.sizes(), ts, [&](const std::array<char*, 3>& p, const std::array<int64_t, 3>& s, int64_t n) {
    constexpr int64_t z = sizeof(T);
    if (s[0] == z && (s[1] == z || s[1] == 0) && (s[2] == z || s[2] == 0)) {
      k.arith(ar, reinterpret_cast<T*>(p[0]), reinterpret_cast<const T*>(p[1]), s[1] != 0,
              reinterpret_cast<const T*>(p[2]), s[2] != 0, al, n);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      const T x = *reinterpret_cast<const T*>(p[1] + i * s[1]), y = *reinterpret_cast<const T*>(p[2] + i * s[2]);
      T& o = *reinterpret_cast<T*>(p[0] + i * s[0]);
      switch (ar) {
        case Arith::Add: o = x + y * al; break;
        case Arith::Sub: o = x - y * al; break;
        case Arith::Mul: o = x * y; break;
        case Arith::Div: o = x / y; break;
      }
    }
  });
  return true;
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                        double alpha) {
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T al = T(alpha);
    if constexpr (std::is_floating_point_v<T>)
      if (vector_arith<T>(op, out, a, b, al)) return;
    switch (op) {
      case BinaryOp::Add:
        if (alpha == 1.0) return map<T, T, T>(out, [](T x, T y) { return x + y; }, a, b);
        return map<T, T, T>(out, [al](T x, T y) { return x + al * y; }, a, b);
      case BinaryOp::Sub:
        if (alpha == 1.0) return map<T, T, T>(out, [](T x, T y) { return x - y; }, a, b);
        return map<T, T, T>(out, [al](T x, T y) { return x - al * y; }, a, b);
      case BinaryOp::Mul: return map<T, T, T>(out, [](T x, T y) { return x * y; }, a, b);
      case BinaryOp::Div:
        if constexpr (std::is_integral_v<T>) {
          // integer division by zero is undefined behaviour: refuse it up front
          bool zero = false;
          for_each<1>(b.sizes(), {&b}, [&zero](const std::array<char*, 1>& p,
                                               const std::array<int64_t, 1>& s, int64_t n) {
            for (int64_t i = 0; i < n; ++i) zero = zero || *reinterpret_cast<const T*>(p[0] + i * s[0]) == 0;
          }, /*parallel=*/false);
          MG_CHECK(!zero, "div: integer division by zero");
          return map<T, T, T>(out, [](T x, T y) { return x / y; }, a, b);
        } else {
          return map<T, T, T>(out, [](T x, T y) { return x / y; }, a, b);
        }
      case BinaryOp::Max: return map<T, T, T>(out, [](T x, T y) { return maxv(x, y); }, a, b);
      case BinaryOp::Min: return map<T, T, T>(out, [](T x, T y) { return minv(x, y); }, a, b);
    }
  });
}

void CpuBackend::compare(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using R = int64_t;
    switch (op) {
      case CompareOp::Eq: return map<R, T, T>(out, [](T x, T y) { return R(x == y); }, a, b);
      case CompareOp::Ne: return map<R, T, T>(out, [](T x, T y) { return R(x != y); }, a, b);
      case CompareOp::Lt: return map<R, T, T>(out, [](T x, T y) { return R(x < y); }, a, b);
      case CompareOp::Le: return map<R, T, T>(out, [](T x, T y) { return R(x <= y); }, a, b);
      case CompareOp::Gt: return map<R, T, T>(out, [](T x, T y) { return R(x > y); }, a, b);
      case CompareOp::Ge: return map<R, T, T>(out, [](T x, T y) { return R(x >= y); }, a, b);
    }
  });
}

void CpuBackend::where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  visit_dtype(out.dtype(), [&](auto tag) {
    visit_dtype(cond.dtype(), [&](auto ctag) {
      using T = typename decltype(tag)::type;
      using C = typename decltype(ctag)::type;
      map<T, C, T, T>(out, [](C c, T x, T y) { return c != C(0) ? x : y; }, cond, a, b);
    });
  });
}

}  // namespace minigrad::cpu
