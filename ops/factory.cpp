// Factories and shape helpers.
#include <cmath>

#include "../core/autograd.h"
#include "backend.h"
#include "ops.h"

namespace minigrad {

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  Tensor t = empty(shape, opts);
  backend_for(t.device()).fill(t, value);
  return t;
}
Tensor zeros(const Shape& shape, TensorOptions opts) { return full(shape, 0.0, opts); }
Tensor ones(const Shape& shape, TensorOptions opts) { return full(shape, 1.0, opts); }
Tensor scalar_tensor(double value, TensorOptions opts) { return full({}, value, opts); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), t.options()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), t.options()); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), t.options()); }
Tensor full_like(const Tensor& t, double v) { return full(t.sizes(), v, t.options()); }

namespace {
// Fills a host tensor of opts' dtype with values from f(i), then moves it to opts' device.
template <class F>
Tensor host_fill(const Shape& shape, TensorOptions opts, F&& f) {
  Tensor t = empty(shape, TensorOptions(opts.dtype_));
  visit_any_dtype(t.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = t.data_ptr<T>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(f(i));
  });
  Tensor out = t.to(opts.device_);
  if (opts.requires_grad_) out.requires_grad_(true);
  return out;
}
}  // namespace

Tensor arange(double end, TensorOptions opts) { return arange(0.0, end, 1.0, opts); }
Tensor arange(double start, double end, double step, TensorOptions opts) {
  MG_CHECK(step != 0.0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
           "arange: invalid range start=", start, " end=", end, " step=", step);
  MG_CHECK((end - start) / step >= 0, "arange: step ", step, " goes away from end ", end,
           " when starting at ", start);
  auto n = int64_t(std::ceil((end - start) / step));
  return host_fill({n}, opts, [&](int64_t i) { return start + double(i) * step; });
}

namespace {
// Fills `shape` with draw(engine) per element from gen (or the default generator), holding the
// generator's lock throughout: one contiguous stretch of its stream per call.
template <class F>
Tensor fill_drawn(const Shape& shape, TensorOptions opts, Generator* gen, F&& draw) {
  Generator& g = gen ? *gen : default_generator();
  std::lock_guard<std::mutex> lock(g.mutex());
  auto& eng = g.engine();
  return host_fill(shape, opts, [&](int64_t) { return draw(eng); });
}
}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, Generator* gen) {
  MG_CHECK(is_floating(opts.dtype_), "rand: expected a floating dtype, got ", opts.dtype_);
  std::uniform_real_distribution<double> d(0.0, 1.0);
  return fill_drawn(shape, opts, gen, [&](std::mt19937_64& eng) {
    double v = d(eng);
    return opts.dtype_ == kFloat32 && float(v) >= 1.0f ? std::nextafter(1.0f, 0.0f) : v;
  });
}

Tensor randn(const Shape& shape, TensorOptions opts, Generator* gen) {
  MG_CHECK(is_floating(opts.dtype_), "randn: expected a floating dtype, got ", opts.dtype_);
  std::normal_distribution<double> d(0.0, 1.0);
  return fill_drawn(shape, opts, gen, [&](std::mt19937_64& eng) { return d(eng); });
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions opts, Generator* gen) {
  MG_CHECK(low < high, "randint: expected low < high, got [", low, ", ", high, ")");
  MG_CHECK(opts.dtype_ != kUInt8 || (low >= 0 && high <= 256), "randint: [", low, ", ", high,
           ") does not fit uint8's 0..255");
  std::uniform_int_distribution<int64_t> d(low, high - 1);
  return fill_drawn(shape, opts, gen, [&](std::mt19937_64& eng) { return d(eng); });
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts) {
  MG_CHECK(int64_t(values.size()) == numel_of(shape), "from_vector: ", values.size(),
           " values do not fill shape ", shape, " (", numel_of(shape), " elements)");
  return host_fill(shape, opts, [&](int64_t i) { return values[size_t(i)]; });
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, TensorOptions);

Tensor from_blob(void* data, const Shape& shape, TensorOptions opts, std::function<void(void*)> deleter) {
  MG_CHECK(data || numel_of(shape) == 0, "from_blob: null data pointer for shape ", shape);
  for (int64_t d : shape) MG_CHECK(d >= 0, "from_blob: negative dimension in shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, size_t(numel_of(shape)) * element_size(opts.dtype_),
                                            opts.device_, std::move(deleter));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = opts.dtype_;
  Tensor t(std::move(impl));
  if (opts.requires_grad_) t.requires_grad_(true);
  return t;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    MG_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
             " are not broadcastable (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.sizes() == shape) return grad;
  const int64_t lead = grad.dim() - int64_t(shape.size());
  MG_CHECK(lead >= 0, "sum_to: cannot sum shape ", grad.sizes(), " to the larger shape ", shape);
  Shape dims;
  for (int64_t i = 0; i < grad.dim(); ++i)
    if (i < lead || (shape[size_t(i - lead)] == 1 && grad.size(i) != 1)) dims.push_back(i);
  Tensor s = dims.empty() ? grad : sum(grad, dims, /*keepdim=*/true);
  return s.reshape(shape);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.sizes() != b.sizes()) return false;
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return false;
    if (std::abs(va[i] - vb[i]) > atol + rtol * std::abs(vb[i])) return false;
  }
  return true;
}

}  // namespace minigrad
