// minigrad: Tensor = shared handle to (storage, shape, strides, offset, dtype, device, autograd meta).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "allocator.h"
#include "device.h"
#include "dtype.h"
#include "error.h"

namespace minigrad {

using Shape = std::vector<int64_t>;
using detail::operator<<;  // prints a Shape as [2, 3]

// The element count; an error naming the shape for a negative dimension or more than 2^63 - 1.
int64_t numel_of(const Shape& s);
// The element count of s (dimensions >= 0; any 0 gives 0) into *n, false when it exceeds 2^64 - 1:
// for callers that word the overflow themselves (the loaders, for a file's declared shape).
bool checked_numel(const Shape& s, uint64_t* n);
Shape contiguous_strides(const Shape& s);

// A block of memory on one device. The version counter is shared by every view of it and is
// bumped by in-place ops, so autograd can tell when a saved tensor was overwritten.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Allocator* owner = nullptr;                  // frees through this allocator, if set
  std::function<void(void*)> deleter;          // else through this (from_blob), if set
  std::atomic<uint64_t> version{0};

  Storage(size_t n, Device d);                 // allocates through allocator_for(d)
  Storage(void* p, size_t n, Device d, std::function<void(void*)> del);  // wraps external memory
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Node;
class Tensor;
using Hook = std::function<Tensor(const Tensor&)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = kFloat32;
  // autograd
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;             // set for results of recorded ops
  uint32_t output_nr = 0;                    // which output of grad_fn this is
  std::shared_ptr<Node> grad_accumulator;    // leaves only, created on first use
  ~TensorImpl();
};

struct TensorOptions {
  DType dtype_ = kFloat32;
  Device device_ = Device::cpu();
  bool requires_grad_ = false;

  TensorOptions() = default;
  TensorOptions(DType t) : dtype_(t) {}        // NOLINT: implicit, as in LibTorch
  TensorOptions(Device d) : device_(d) {}      // NOLINT
  TensorOptions(DeviceType d) : device_(d) {}  // NOLINT
  TensorOptions dtype(DType t) const { auto o = *this; o.dtype_ = t; return o; }
  TensorOptions device(Device d) const { auto o = *this; o.device_ = d; return o; }
  TensorOptions requires_grad(bool r = true) const { auto o = *this; o.requires_grad_ = r; return o; }
};
inline TensorOptions dtype(DType t) { return TensorOptions().dtype(t); }
inline TensorOptions device(Device d) { return TensorOptions().device(d); }
inline TensorOptions requires_grad(bool r = true) { return TensorOptions().requires_grad(r); }

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl().shape; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t numel() const { return numel_of(impl().shape); }
  int64_t storage_offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  DType scalar_type() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  TensorOptions options() const { return TensorOptions(dtype()).device(device()); }
  bool is_contiguous() const;
  size_t element_size() const { return minigrad::element_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  // Raw pointer to the first element (CPU or device memory). Checks the type on typed access.
  void* raw_data() const;
  template <class T>
  T* data_ptr() const {
    MG_CHECK(dtype_of<T>() == dtype(), "data_ptr: tensor is ", dtype(), ", asked for ", dtype_of<T>());
    return static_cast<T*>(raw_data());
  }
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- element access (copies to the host when needed)
  double item() const;
  template <class T>
  T item() const { return static_cast<T>(item()); }
  template <class T>
  std::vector<T> to_vector() const;  // all elements, in row-major order
  Tensor operator[](int64_t i) const;  // select(0, i)

  // ---- autograd
  bool requires_grad() const { return defined() && impl().requires_grad; }
  Tensor& requires_grad_(bool r = true);
  bool is_leaf() const { return !impl().grad_fn; }
  Tensor grad() const;                  // undefined until a backward reached this tensor
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor detach() const;                // shares storage, no history
  // Makes this tensor hold `data`'s storage and geometry, keeping its identity (handles held
  // elsewhere, e.g. a module's parameter, see the new data). Used by Module::to().
  void set_data(const Tensor& data) const;
  Tensor& detach_();
  // Gradient of this tensor. With no argument the tensor must hold one element.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Called with the gradient flowing into this tensor; may return a replacement (or an
  // undefined Tensor to keep it). Returns an id for remove_hook.
  int register_hook(Hook hook) const;
  void remove_hook(int id) const;
  void retain_grad() const;             // keep .grad() on a non-leaf too
  void zero_grad() const;               // drops .grad()

  // ---- conversion and copies
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType t) const;
  Tensor to(Device d) const;
  Tensor cpu() const { return to(Device::cpu()); }

  // ---- views (share storage; differentiable)
  Tensor view(const Shape& s) const;
  Tensor reshape(const Shape& s) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, std::optional<int64_t> start, std::optional<int64_t> end,
               int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& s) const;
  Tensor expand_as(const Tensor& o) const { return expand(o.sizes()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // ---- in-place (bump the version; refused on tensors that need grad while grad mode is on)
  Tensor& fill_(double v);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);
  Tensor& add_(const Tensor& o, double alpha = 1.0);
  Tensor& add_(double v);
  Tensor& sub_(const Tensor& o) { return add_(o, -1.0); }
  Tensor& mul_(const Tensor& o);
  Tensor& mul_(double v);
  Tensor& div_(const Tensor& o);
  Tensor& div_(double v) { return mul_(1.0 / v); }

  // ---- op methods (same as the free functions)
  Tensor neg() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor pow(double e) const;
  Tensor relu() const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor max() const;
  Tensor min() const;
  Tensor argmax() const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor matmul(const Tensor& o) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;

 private:
  TensorImpl& impl() const {
    MG_CHECK(impl_, "tensor: use of an undefined (default-constructed) Tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Creates an uninitialised tensor (the building block of every factory and op result).
Tensor empty(const Shape& shape, TensorOptions opts = {});
// A new TensorImpl viewing t's storage with other geometry; no autograd history.
Tensor make_view(const Tensor& t, Shape shape, Shape strides, int64_t offset);

}  // namespace minigrad
