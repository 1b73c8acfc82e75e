// minigrad: nn::Module, the base of every layer and model, in the shape of LibTorch's.
#pragma once
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace minigrad::nn {

class Module : public std::enable_shared_from_this<Module> {
 public:
  explicit Module(std::string name = "Module") : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The layer's computation; models override it. Sequential calls each child's forward.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  const std::string& name() const { return name_; }
  // Parameters (and buffers) of this module and all submodules; names are dotted paths
  // ("features.0.weight"), in registration order.
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }

  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Moves (or casts) every parameter and buffer in place: handles to them stay valid.
  void to(Device d);
  void to(DType t);
  void zero_grad();
  int64_t parameter_count() const;

  // One line about this module (its options); operator<< prints the tree with parameter counts.
  virtual void pretty_print(std::ostream& os) const;
  friend std::ostream& operator<<(std::ostream& os, const Module& m);

  // Public, as in LibTorch: code that builds a module (helpers, tests) may register on it.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  void add_child(const std::string& name, std::shared_ptr<Module> m);

 private:
  void print_tree(std::ostream& os, int indent) const;
  std::string name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

}  // namespace minigrad::nn
