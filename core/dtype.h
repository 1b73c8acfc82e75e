// minigrad: element types and the dispatch from a runtime dtype to a C++ type.
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <type_traits>

#include "error.h"

namespace minigrad {

// UInt8 holds raw bytes (images, as datasets ship them): it can be created, copied, viewed, saved
// and converted with .to(); ops that compute refuse it with an error that says to convert first.
enum class DType : uint8_t { Float32, Float64, Int64, UInt8 };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kDouble = DType::Float64;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kLong = DType::Int64;
inline constexpr DType kUInt8 = DType::UInt8;
inline constexpr DType kByte = DType::UInt8;

inline constexpr size_t element_size(DType t) {
  return t == DType::Float32 ? 4 : t == DType::UInt8 ? 1 : 8;
}
inline constexpr bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64; }
inline constexpr const char* dtype_name(DType t) {
  return t == DType::Float32 ? "float32" : t == DType::Float64 ? "float64" : t == DType::Int64 ? "int64" : "uint8";
}
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

// The dtype two operands are computed in: float64 > float32 > int64 > uint8 (as in PyTorch).
inline constexpr DType promote(DType a, DType b) {
  if (a == DType::Float64 || b == DType::Float64) return DType::Float64;
  if (a == DType::Float32 || b == DType::Float32) return DType::Float32;
  if (a == DType::Int64 || b == DType::Int64) return DType::Int64;
  return DType::UInt8;
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::Float32;
  else if constexpr (std::is_same_v<T, double>) return DType::Float64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::UInt8;
  else {
    static_assert(std::is_same_v<T, int64_t>, "minigrad tensors hold float, double, int64_t or uint8_t");
    return DType::Int64;
  }
}

template <class T>
struct type_tag { using type = T; };

// visit_dtype(dt, [&](auto tag) { using T = typename decltype(tag)::type; ... }): the dtypes that
// ops compute in. Ops check for uint8 first (check_computable) so that their error names them.
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Float32: return f(type_tag<float>{});
    case DType::Float64: return f(type_tag<double>{});
    case DType::Int64: return f(type_tag<int64_t>{});
    case DType::UInt8: break;
  }
  MG_FAIL("expected a float32, float64 or int64 tensor, got ", dtype_name(t),
          " (uint8 tensors hold raw bytes: convert them first, e.g. .to(kFloat32))");
}
// Every dtype, uint8 included: for creating, copying and converting.
template <class F>
decltype(auto) visit_any_dtype(DType t, F&& f) {
  if (t == DType::UInt8) return f(type_tag<uint8_t>{});
  return visit_dtype(t, std::forward<F>(f));
}
// Refuses uint8 in an op that computes, naming it.
inline void check_computable(const char* op, DType t) {
  MG_CHECK(t != DType::UInt8, op, ": got a uint8 tensor; uint8 holds raw bytes (e.g. images): convert it first, "
           "e.g. x.to(kFloat32)");
}
// Same, for kernels that only exist for floating types; names the op in the error.
template <class F>
decltype(auto) visit_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::Float32: return f(type_tag<float>{});
    case DType::Float64: return f(type_tag<double>{});
    default: MG_FAIL(op, ": expected a floating dtype (float32 or float64), got ", t);
  }
}

}  // namespace minigrad
