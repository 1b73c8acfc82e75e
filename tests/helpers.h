// Shared test helpers: the devices every test body runs on, naive references, the gradient check.
#pragma once
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "minigrad.h"
#include "ops/backend.h"

namespace mgtest {
using namespace minigrad;

// The devices the test bodies run on: the CPU, plus CUDA when its backend and a GPU are present.
// MINIGRAD_TEST_DEVICES=cuda (or cpu, or cpu,cuda) narrows them; the op table's CPU reference runs
// are made either way.
inline std::vector<Device> devices() {
  std::vector<Device> all{Device::cpu()};
  if (device_available(Device::cuda())) all.push_back(Device::cuda());
  const char* env = std::getenv("MINIGRAD_TEST_DEVICES");
  if (!env || !*env) return all;
  const std::string want = std::string(",") + env + ",";
  std::vector<Device> d;
  for (Device dev : all)
    if (want.find(dev.is_cpu() ? ",cpu," : ",cuda,") != std::string::npos) d.push_back(dev);
  return d;
}

// Runs body(dev) once on every device of devices(), with the device in any failure's message.
template <class F>
void for_each_device(F&& body) {
  for (Device dev : devices()) {
    CAPTURE(dev);
    body(dev);
  }
}

// Runs body once at every CPU ISA level this CPU has (generic, avx2, avx512: the per-level kernels
// of ops/cpu/isa/), then restores the running level.
template <class F>
void for_each_cpu_isa(F&& body) {
  const CpuIsa saved = cpu_isa();
  for (CpuIsa isa : cpu_isa_levels()) {
    const std::string level = cpu_isa_name(isa);
    CAPTURE(level);
    set_cpu_isa(isa);
    body();
  }
  set_cpu_isa(saved);
}

// A float64 leaf on `dev` that requires grad, with values from randn (or uniform in [lo, hi)).
inline Tensor leaf(const Shape& s, Device dev, double lo = 0, double hi = 0) {
  Tensor t = hi > lo ? add(mul(rand(s, kFloat64), hi - lo), lo) : randn(s, kFloat64);
  return t.to(dev).detach().requires_grad_();
}

inline std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// Index of out element `i` (row-major in out_shape) in a tensor of in_shape broadcast to it.
inline int64_t bcast_index(int64_t i, const Shape& out_shape, const Shape& in_shape) {
  int64_t idx = 0, stride = 1;
  const size_t lead = out_shape.size() - in_shape.size();
  for (size_t d = out_shape.size(); d-- > 0;) {
    int64_t c = i % out_shape[d];
    i /= out_shape[d];
    if (d >= lead) {
      int64_t n = in_shape[d - lead];
      idx += (n == 1 ? 0 : c) * stride;
      stride *= n;
    }
  }
  return idx;
}

// Naive (m,k)@(k,n) on row-major value lists.
inline std::vector<double> ref_mm(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t k,
                                  int64_t n) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l)
      for (int64_t j = 0; j < n; ++j) c[size_t(i * n + j)] += a[size_t(i * k + l)] * b[size_t(l * n + j)];
  return c;
}

inline void check_close(const std::vector<double>& got, const std::vector<double>& want,
                        double tol = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      CHECK_MESSAGE(std::isnan(got[i]), "element ", i);
      continue;
    }
    CHECK_MESSAGE(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])),
                  "element ", i, ": got ", got[i], ", want ", want[i]);
  }
}

// The exception's message, or "" when fn does not throw minigrad::Error.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
// A directory of its own under the system temp directory, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("minigrad-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};
inline void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
inline std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace mgtest

// One generic gradient checker for every op: float64 central differences vs backward().
#define CHECK_GRAD(fn, ...)                                                     \
  do {                                                                          \
    auto _r = ::minigrad::gradcheck(fn, std::vector<::minigrad::Tensor>{__VA_ARGS__}); \
    CHECK_MESSAGE(_r.ok, _r.message);                                           \
  } while (0)

// Expects a minigrad::Error whose message contains every given fragment.
#define CHECK_ERROR(expr, ...)                                                  \
  do {                                                                          \
    std::string _m = ::mgtest::error_of([&] { (void)(expr); });                 \
    CHECK_MESSAGE(!_m.empty(), "expected minigrad::Error from " #expr);         \
    for (const char* _f : {__VA_ARGS__})                                        \
      CHECK_MESSAGE(_m.find(_f) != std::string::npos, "message '", _m, "' lacks '", std::string(_f), "'"); \
  } while (0)
