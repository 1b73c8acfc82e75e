#include "tensor.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <numeric>

#include "../ops/backend.h"
#include "../ops/ops.h"
#include "autograd.h"

namespace minigrad {

bool checked_numel(const Shape& s, uint64_t* n) {
  *n = 1;
  for (int64_t d : s)
    if (d == 0) return *n = 0, true;
  for (int64_t d : s)
    if (__builtin_mul_overflow(*n, uint64_t(d), n)) return false;
  return true;
}

int64_t numel_of(const Shape& s) {
  for (int64_t d : s) MG_CHECK(d >= 0, "shape ", s, " has a negative dimension");
  uint64_t n = 0;
  if (!checked_numel(s, &n) || n > uint64_t(INT64_MAX)) MG_FAIL("shape ", s, " has more than 2^63 - 1 elements");
  return int64_t(n);
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    if (__builtin_mul_overflow(acc, std::max<int64_t>(s[i], 1), &acc))
      MG_FAIL("shape ", s, ": its strides overflow 64 bits");
  }
  return st;
}

Storage::Storage(size_t n, Device d) : nbytes(n), device(d), owner(&allocator_for(d)) {
  data = owner->allocate(n);
}
Storage::Storage(void* p, size_t n, Device d, std::function<void(void*)> del)
    : data(p), nbytes(n), device(d), deleter(std::move(del)) {}
Storage::~Storage() {
  if (owner) owner->deallocate(data, nbytes);
  else if (deleter) deleter(data);
}

TensorImpl::~TensorImpl() {
  detail::release_node(std::move(grad_fn));
  detail::release_node(std::move(grad_accumulator));
}

Tensor empty(const Shape& shape, TensorOptions opts) {
  for (int64_t d : shape) MG_CHECK(d >= 0, "empty: negative dimension in shape ", shape);
  int64_t nbytes = 0;
  // At most 2^62 bytes: the allocator rounds sizes up, and offsets into the storage stay int64_t.
  if (__builtin_mul_overflow(numel_of(shape), int64_t(element_size(opts.dtype_)), &nbytes) ||
      nbytes > (int64_t(1) << 62))
    MG_FAIL("empty: shape ", shape, " of ", opts.dtype_, " needs more than 2^62 bytes");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(nbytes), opts.device_);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = opts.dtype_;
  impl->requires_grad = opts.requires_grad_;
  if (opts.requires_grad_)
    MG_CHECK(is_floating(opts.dtype_), "tensor: only floating tensors can require grad, got ", opts.dtype_);
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& t, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

namespace {

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op, const Shape& shape) {
  int64_t n = std::max<int64_t>(ndim, 1);
  MG_CHECK(d >= -n && d < n, op, ": dim ", d, " is out of range for a tensor of shape ", shape,
           " (expected in [", -n, ", ", n - 1, "])");
  return d < 0 ? d + n : d;
}

// Records a view's node: backward is given the gradient of the view and returns the input's.
Tensor record_view(const char* name, const Tensor& in, Tensor out,
                   std::function<Tensor(const Tensor&)> back) {
  if (needs_grad(in))
    record(name, {in}, {out}, [back = std::move(back)](std::vector<Tensor>& g) {
      return std::vector<Tensor>{back(g[0])};
    });
  return out;
}

// Strides for viewing (shape, strides) as new_shape without a copy, if possible.
std::optional<Shape> view_strides(const Shape& shape, const Shape& strides, const Shape& ns) {
  if (numel_of(shape) == 0 || shape.empty()) return contiguous_strides(ns);
  Shape out(ns.size());
  int64_t view_d = int64_t(ns.size()) - 1;
  int64_t chunk = strides.back(), tn = 1, vn = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    tn *= shape[d];
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tn * chunk)) {
      while (view_d >= 0 && (vn < tn || ns[view_d] == 1)) {
        out[view_d] = vn * chunk;
        vn *= ns[view_d];
        --view_d;
      }
      if (vn != tn) return std::nullopt;
      if (d > 0) {
        chunk = strides[d - 1];
        tn = vn = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

Shape infer_shape(const Shape& s, int64_t numel, const char* op, const Shape& from) {
  Shape out = s;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MG_CHECK(infer < 0, op, ": only one dimension can be -1, got ", s);
      infer = int64_t(i);
    } else {
      MG_CHECK(s[i] >= 0, op, ": invalid size in shape ", s);
      if (__builtin_mul_overflow(known, s[i], &known))
        MG_FAIL(op, ": shape ", s, " has more than 2^63 - 1 elements (input of shape ", from, ")");
    }
  }
  if (infer >= 0) {
    MG_CHECK(known != 0 && numel % known == 0, op, ": shape ", s, " is invalid for input of shape ",
             from, " (", numel, " elements)");
    out[infer] = numel / known;
  }
  MG_CHECK(numel_of(out) == numel, op, ": shape ", s, " is invalid for input of shape ", from, " (",
           numel, " elements)");
  return out;
}

void check_inplace(const char* op, const Tensor& self, const Tensor* other = nullptr) {
  if (GradMode::is_enabled())
    MG_CHECK(!self.requires_grad() && !(other && other->requires_grad()), op,
             ": in-place op on a tensor that requires grad (shape ", self.sizes(),
             "); use the out-of-place op, or wrap the update in NoGradGuard");
  for (int64_t i = 0; i < self.dim(); ++i)
    MG_CHECK(self.stride(i) != 0 || self.size(i) <= 1, op,
             ": in-place write into an expanded tensor (shape ", self.sizes(), ", strides ",
             self.strides(), ") would write one element several times; call contiguous() first");
}

void bump(const Tensor& t) { t.storage()->version++; }

}  // namespace

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size", shape())]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride", shape())]; }

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (size(i) == 1) continue;
    if (stride(i) != acc) return false;
    acc *= size(i);
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data) + storage_offset() * int64_t(element_size());
}

double Tensor::item() const {
  MG_CHECK(numel() == 1, "item: expected a tensor with one element, got shape ", sizes());
  Tensor c = device().is_cpu() ? *this : to(Device::cpu());
  return visit_any_dtype(dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    return double(*static_cast<const T*>(c.raw_data()));
  });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach().to(Device::cpu()).to(dtype_of<T>()).contiguous();
  const T* p = c.data_ptr<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

Tensor Tensor::operator[](int64_t i) const { return select(0, i); }

// ---- autograd surface

Tensor& Tensor::requires_grad_(bool r) {
  MG_CHECK(is_leaf(), "requires_grad_: can only change requires_grad on a leaf tensor (this one is "
                      "the result of ", grad_fn()->name(), "); use detach() first");
  MG_CHECK(!r || is_floating(dtype()), "requires_grad_: only floating tensors can require grad, got ",
           dtype());
  impl().requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined())
    MG_CHECK(g.sizes() == sizes() && g.dtype() == dtype() && g.device() == device(),
             "set_grad: gradient of shape ", g.sizes(), " (", g.dtype(), ", ", g.device(),
             ") does not match tensor of shape ", sizes(), " (", dtype(), ", ", device(), ")");
  impl().grad = g.impl_;
}

Tensor Tensor::detach() const {
  return make_view(*this, sizes(), strides(), storage_offset());
}

void Tensor::set_data(const Tensor& data) const {
  MG_CHECK(data.defined(), "set_data: undefined data");
  TensorImpl& me = impl();
  const TensorImpl& src = *data.impl_ptr();
  me.storage = src.storage;
  me.shape = src.shape;
  me.strides = src.strides;
  me.offset = src.offset;
  me.dtype = src.dtype;
  if (me.grad) me.grad.reset();
  me.grad_accumulator.reset();
}

Tensor& Tensor::detach_() {
  detail::release_node(std::move(impl().grad_fn));
  impl().requires_grad = false;
  return *this;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  minigrad::backward({*this}, {gradient}, retain_graph);
}

int Tensor::register_hook(Hook hook) const {
  MG_CHECK(requires_grad(), "register_hook: tensor of shape ", sizes(),
           " does not require grad, so no gradient will flow through it");
  auto node = is_leaf() ? detail::grad_accumulator(impl_) : grad_fn();
  uint32_t slot = is_leaf() ? 0 : impl().output_nr;
  int id = detail::next_hook_id();
  node->pre_hooks[slot].emplace_back(id, std::move(hook));
  return id;
}

void Tensor::remove_hook(int id) const {
  auto node = is_leaf() ? impl().grad_accumulator : grad_fn();
  if (!node) return;
  for (auto& hooks : node->pre_hooks)
    std::erase_if(hooks, [id](const auto& h) { return h.first == id; });
}

void Tensor::retain_grad() const {
  MG_CHECK(requires_grad(), "retain_grad: tensor of shape ", sizes(), " does not require grad");
  if (is_leaf() || impl().retains_grad) return;
  impl().retains_grad = true;
  std::weak_ptr<TensorImpl> w = impl_;
  register_hook([w](const Tensor& g) {
    if (auto p = w.lock()) {
      if (p->grad) Tensor(p->grad).add_(g);
      else p->grad = g.clone().impl_ptr();
    }
    return Tensor();
  });
}

void Tensor::zero_grad() const { impl().grad.reset(); }

// ---- conversion and copies

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor out = empty(sizes(), options());
  backend_for(device()).copy(out, *this);
  return record_view("clone", *this, out, [](const Tensor& g) { return g; });
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(sizes(), options().dtype(t));
  backend_for(device()).copy(out, *this);
  if (!is_floating(t)) return out;  // integer results carry no gradient
  DType from = dtype();
  return record_view("to", *this, out, [from](const Tensor& g) { return g.to(from); });
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(sizes(), options().device(d));
  backend_for(d.is_cpu() ? device() : d).copy(out, *this);  // the non-CPU side's backend copies
  Device from = device();
  return record_view("to", *this, out, [from](const Tensor& g) { return g.to(from); });
}

// ---- views

Tensor Tensor::view(const Shape& s) const {
  Shape ns = infer_shape(s, numel(), "view", sizes());
  auto st = view_strides(sizes(), strides(), ns);
  MG_CHECK(st, "view: cannot view a tensor of shape ", sizes(), " with strides ", strides(),
           " as shape ", ns, " without a copy; use reshape()");
  Shape in_shape = sizes();
  return record_view("view", *this, make_view(*this, ns, *st, storage_offset()),
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::reshape(const Shape& s) const {
  Shape ns = infer_shape(s, numel(), "reshape", sizes());
  if (view_strides(sizes(), strides(), ns)) return view(ns);
  return clone().view(ns);
}

Tensor Tensor::permute(const Shape& dims) const {
  MG_CHECK(int64_t(dims.size()) == dim(), "permute: got ", dims.size(), " dims ", dims,
           " for a tensor of shape ", sizes());
  Shape ns(dims.size()), st(dims.size()), inv(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute", sizes());
    MG_CHECK(!seen[d], "permute: dim ", d, " repeated in ", dims);
    seen[d] = true;
    ns[i] = size(d);
    st[i] = stride(d);
    inv[d] = int64_t(i);
  }
  return record_view("permute", *this, make_view(*this, ns, st, storage_offset()),
                     [inv](const Tensor& g) { return g.permute(inv); });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  if (dim() == 0) return *this;
  Shape p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(d0, dim(), "transpose", sizes())], p[wrap_dim(d1, dim(), "transpose", sizes())]);
  return permute(p);
}

Tensor Tensor::t() const {
  MG_CHECK(dim() <= 2, "t: expects a tensor with <= 2 dims, got shape ", sizes());
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::slice(int64_t d, std::optional<int64_t> start, std::optional<int64_t> end,
                     int64_t step) const {
  MG_CHECK(dim() > 0, "slice: cannot slice a 0-dim tensor");
  d = wrap_dim(d, dim(), "slice", sizes());
  MG_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = size(d);
  auto clampi = [n](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + n : v, 0, n); };
  int64_t s = clampi(start.value_or(0)), e = clampi(end.value_or(n));
  int64_t len = e > s ? (e - s + step - 1) / step : 0;
  Shape ns = sizes(), st = strides();
  ns[d] = len;
  st[d] *= step;
  Shape in_shape = sizes();
  return record_view("slice", *this, make_view(*this, ns, st, storage_offset() + s * stride(d)),
                     [in_shape, d, s, e, step](const Tensor& g) {
                       Tensor gx = zeros(in_shape, g.options());
                       NoGradGuard ng;
                       gx.detach().slice(d, s, e, step).copy_(g);
                       return gx;
                     });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  MG_CHECK(dim() > 0, "narrow: cannot narrow a 0-dim tensor");
  int64_t dd = wrap_dim(d, dim(), "narrow", sizes());
  int64_t n = size(dd);
  if (start < 0) start += n;
  MG_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: start ", start, " and length ",
           length, " are out of range for dim ", dd, " of size ", n, " (shape ", sizes(), ")");
  return slice(dd, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  MG_CHECK(dim() > 0, "select: cannot select on a 0-dim tensor");
  d = wrap_dim(d, dim(), "select", sizes());
  int64_t n = size(d);
  MG_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d,
           " of size ", n, " (shape ", sizes(), ")");
  if (index < 0) index += n;
  Shape ns = sizes(), st = strides();
  ns.erase(ns.begin() + d);
  st.erase(st.begin() + d);
  Shape in_shape = sizes();
  return record_view("select", *this, make_view(*this, ns, st, storage_offset() + index * stride(d)),
                     [in_shape, d, index](const Tensor& g) {
                       Tensor gx = zeros(in_shape, g.options());
                       NoGradGuard ng;
                       gx.detach().select(d, index).copy_(g);
                       return gx;
                     });
}

Tensor Tensor::expand(const Shape& s) const {
  MG_CHECK(s.size() >= size_t(dim()), "expand: target shape ", s, " has fewer dims than the tensor's ",
           sizes());
  size_t lead = s.size() - size_t(dim());
  Shape ns(s.size()), st(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (i < lead) {
      MG_CHECK(s[i] >= 0, "expand: cannot use -1 for a new leading dim in ", s);
      ns[i] = s[i];
      st[i] = 0;
      continue;
    }
    int64_t cur = size(int64_t(i - lead)), want = s[i] == -1 ? cur : s[i];
    MG_CHECK(cur == want || cur == 1, "expand: cannot expand shape ", sizes(), " to ", s,
             " (dim ", i, ": size ", cur, " is neither ", want, " nor 1)");
    ns[i] = want;
    st[i] = cur == want ? stride(int64_t(i - lead)) : 0;
  }
  if (ns == sizes()) return *this;
  Shape in_shape = sizes();
  return record_view("expand", *this, make_view(*this, ns, st, storage_offset()),
                     [in_shape](const Tensor& g) { return sum_to(g, in_shape); });
}

Tensor Tensor::squeeze() const {
  Shape ns;
  for (int64_t d : sizes())
    if (d != 1) ns.push_back(d);
  return ns.size() == size_t(dim()) ? *this : view(ns);
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze", sizes());
  if (size(d) != 1) return *this;
  Shape ns = sizes();
  ns.erase(ns.begin() + d);
  return view(ns);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze", sizes());
  Shape ns = sizes();
  ns.insert(ns.begin() + d, 1);
  return view(ns);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten", sizes());
  end = wrap_dim(end, dim(), "flatten", sizes());
  MG_CHECK(start <= end, "flatten: start_dim ", start, " is after end_dim ", end);
  Shape ns(sizes().begin(), sizes().begin() + start);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= size(i);
  ns.push_back(m);
  ns.insert(ns.end(), sizes().begin() + end + 1, sizes().end());
  return reshape(ns);
}

// ---- in-place

Tensor& Tensor::fill_(double v) {
  check_inplace("fill_", *this);
  backend_for(device()).fill(*this, v);
  bump(*this);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace("copy_", *this, &src);
  Tensor s = src.expand(sizes());  // broadcasts src, or says why it cannot
  MG_CHECK(src.device() == device() || device().is_cpu() || src.device().is_cpu(),
           "copy_: cannot copy between ", src.device(), " and ", device());
  backend_for(device().is_cpu() ? src.device() : device()).copy(*this, s);
  bump(*this);
  return *this;
}

namespace {
void binary_inplace(const char* op, Tensor& self, const Tensor& o, BinaryOp bop, double alpha) {
  check_inplace(op, self, &o);
  MG_CHECK(o.device() == self.device(), op, ": tensors are on different devices: ", self.device(),
           " and ", o.device());
  MG_CHECK(broadcast_shapes(self.sizes(), o.sizes(), op) == self.sizes(), op, ": cannot broadcast ",
           o.sizes(), " into the in-place result of shape ", self.sizes());
  MG_CHECK(promote(self.dtype(), o.dtype()) == self.dtype(), op, ": result type ",
           promote(self.dtype(), o.dtype()), " cannot be stored in a ", self.dtype(), " tensor");
  Tensor b = o.to(self.dtype()).expand(self.sizes());
  backend_for(self.device()).binary(bop, self, self, b, alpha);
  bump(self);
}
}  // namespace

Tensor& Tensor::add_(const Tensor& o, double alpha) {
  binary_inplace("add_", *this, o, BinaryOp::Add, alpha);
  return *this;
}
Tensor& Tensor::add_(double v) { return add_(scalar_tensor(v, options())); }
Tensor& Tensor::mul_(const Tensor& o) {
  binary_inplace("mul_", *this, o, BinaryOp::Mul, 1.0);
  return *this;
}
Tensor& Tensor::mul_(double v) { return mul_(scalar_tensor(v, options())); }
Tensor& Tensor::div_(const Tensor& o) {
  binary_inplace("div_", *this, o, BinaryOp::Div, 1.0);
  return *this;
}

// ---- op methods
Tensor Tensor::neg() const { return minigrad::neg(*this); }
Tensor Tensor::exp() const { return minigrad::exp(*this); }
Tensor Tensor::log() const { return minigrad::log(*this); }
Tensor Tensor::sqrt() const { return minigrad::sqrt(*this); }
Tensor Tensor::abs() const { return minigrad::abs(*this); }
Tensor Tensor::pow(double e) const { return minigrad::pow(*this, e); }
Tensor Tensor::relu() const { return minigrad::relu(*this); }
Tensor Tensor::sigmoid() const { return minigrad::sigmoid(*this); }
Tensor Tensor::tanh() const { return minigrad::tanh(*this); }
Tensor Tensor::sum() const { return minigrad::sum(*this); }
Tensor Tensor::sum(const Shape& d, bool k) const { return minigrad::sum(*this, d, k); }
Tensor Tensor::mean() const { return minigrad::mean(*this); }
Tensor Tensor::mean(const Shape& d, bool k) const { return minigrad::mean(*this, d, k); }
Tensor Tensor::max() const { return minigrad::max(*this); }
Tensor Tensor::min() const { return minigrad::min(*this); }
Tensor Tensor::argmax() const { return minigrad::argmax(*this); }
Tensor Tensor::argmax(int64_t d, bool k) const { return minigrad::argmax(*this, d, k); }
Tensor Tensor::matmul(const Tensor& o) const { return minigrad::matmul(*this, o); }
Tensor Tensor::softmax(int64_t d) const { return minigrad::softmax(*this, d); }
Tensor Tensor::log_softmax(int64_t d) const { return minigrad::log_softmax(*this, d); }

// ---- printing

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  Tensor c = t.detach().to(Device::cpu()).to(kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  const bool integral = !is_floating(t.dtype());
  const int64_t n = c.numel(), edge = 3;
  const bool summarize = n > 1000;
  auto elem = [&](int64_t i) {
    std::ostringstream e;
    if (integral) e << int64_t(p[i]);
    else e << std::setprecision(4) << std::fixed << p[i];
    return e.str();
  };
  std::function<void(int64_t, int64_t)> rec = [&](int64_t d, int64_t base) {
    if (d == c.dim()) {
      os << elem(base);
      return;
    }
    os << '[';
    int64_t sz = c.size(d), st = c.stride(d);
    std::vector<int64_t> shown;
    for (int64_t i = 0; i < sz; ++i) {
      if (summarize && sz > 2 * edge && i == edge) {
        shown.push_back(-1);  // "..."
        i = sz - edge;
      }
      shown.push_back(i);
    }
    for (size_t k = 0; k < shown.size(); ++k) {
      if (k > 0) os << (d + 1 < c.dim() ? ",\n" + std::string(size_t(d + 8), ' ') : ", ");
      if (shown[k] < 0) os << "...";
      else rec(d + 1, base + shown[k] * st);
    }
    os << ']';
  };
  os << "tensor(";
  rec(0, 0);
  os << ", shape=" << t.sizes() << ", dtype=" << t.dtype();
  if (!t.device().is_cpu()) os << ", device=" << t.device();
  if (t.requires_grad()) os << (t.grad_fn() ? ", grad_fn=" + t.grad_fn()->name() : ", requires_grad");
  return os << ")";
}

}  // namespace minigrad
