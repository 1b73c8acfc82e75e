#include "function.h"

#include <cxxabi.h>

#include <cstdlib>

namespace minigrad::autograd {

void AutogradContext::save_for_backward(const variable_list& ts) {
  saved_.clear();
  for (const auto& t : ts) saved_.emplace_back(t);
}

variable_list AutogradContext::get_saved_variables() const {
  MG_CHECK(!released_, name_, ": backward through this op a second time, but its saved tensors were "
                       "already freed; pass retain_graph=true to the first backward()");
  variable_list out;
  for (const auto& s : saved_) out.push_back(s.unpack(name_));
  return out;
}

// The tape node of a custom Function: calls T::backward and checks what it returns.
class CustomNode final : public Node {
 public:
  CustomNode(std::shared_ptr<AutogradContext> ctx, size_t num_args, std::vector<int> tensor_arg_index,
             std::vector<int> recorded_outputs, size_t num_outputs,
             std::function<variable_list(AutogradContext*, variable_list)> backward)
      : Node(ctx->op_name()), ctx_(std::move(ctx)), num_args_(num_args), tensor_arg_index_(std::move(tensor_arg_index)),
        recorded_(std::move(recorded_outputs)), num_outputs_(num_outputs), backward_(std::move(backward)) {}

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    MG_CHECK(!ctx_->released_, name(), ": backward through this op a second time, but its saved tensors "
                                       "were already freed; pass retain_graph=true to the first backward()");
    variable_list g(num_outputs_);  // outputs that are not recorded (not floating) get none
    for (size_t i = 0; i < recorded_.size(); ++i) g[size_t(recorded_[i])] = std::move(grads[i]);
    variable_list r = backward_(ctx_.get(), std::move(g));
    MG_CHECK(r.size() == num_args_, name(), ": backward returned ", r.size(), " gradients, but forward took ",
             num_args_, " arguments (return one per argument; an undefined Tensor for non-tensor ones)");
    std::vector<bool> is_tensor(num_args_, false);
    for (int a : tensor_arg_index_) is_tensor[size_t(a)] = true;
    for (size_t a = 0; a < num_args_; ++a)
      MG_CHECK(is_tensor[a] || !r[a].defined(), name(), ": backward returned a gradient for argument ", a,
               ", which is not a tensor");
    std::vector<Tensor> out;
    for (size_t k = 0; k < tensor_arg_index_.size(); ++k) {
      Tensor gk = r[size_t(tensor_arg_index_[k])];
      out.push_back(needs_input_grad(k) ? gk : Tensor());  // the engine checks shape, dtype, device
    }
    return out;
  }
  void release_saved() override {
    ctx_->saved_.clear();
    ctx_->saved_data.clear();
    ctx_->released_ = true;
  }

 private:
  std::shared_ptr<AutogradContext> ctx_;
  size_t num_args_;
  std::vector<int> tensor_arg_index_, recorded_;
  size_t num_outputs_;
  std::function<variable_list(AutogradContext*, variable_list)> backward_;
};

namespace detail {

std::string demangle(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  return s;
}

variable_list finish_apply(const std::shared_ptr<AutogradContext>& ctx, size_t num_args,
                           const std::vector<int>& tensor_arg_index, const variable_list& inputs,
                           variable_list outputs,
                           std::function<variable_list(AutogradContext*, variable_list)> backward) {
  for (size_t i = 0; i < outputs.size(); ++i)
    MG_CHECK(outputs[i].defined(), ctx->op_name(), ": forward returned an undefined tensor as output ", i);
  if (!needs_grad(inputs)) return outputs;
  // Outputs that are an input, or already have history, are recorded through an alias.
  std::vector<int> recorded;
  variable_list rec;
  for (size_t i = 0; i < outputs.size(); ++i) {
    Tensor& o = outputs[i];
    if (!is_floating(o.dtype())) continue;  // integer outputs are not differentiable
    bool alias = o.requires_grad() || o.grad_fn();
    for (const auto& in : inputs) alias = alias || (in.defined() && in.is_same(o));
    for (size_t j = 0; j < i; ++j) alias = alias || outputs[j].is_same(o);
    if (alias) o = o.detach();
    recorded.push_back(int(i));
    rec.push_back(o);
  }
  auto node = std::make_shared<CustomNode>(ctx, num_args, tensor_arg_index, recorded, outputs.size(),
                                           std::move(backward));
  record_node(node, inputs, rec);
  return outputs;
}

}  // namespace detail
}  // namespace minigrad::autograd
