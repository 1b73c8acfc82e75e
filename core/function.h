// minigrad: custom differentiable ops, shaped like LibTorch's torch::autograd::Function<T>.
//
//   struct ClippedSquare : autograd::Function<ClippedSquare> {
//     static constexpr const char* name = "ClippedSquare";           // optional, for errors
//     static Tensor forward(autograd::AutogradContext* ctx, Tensor x) {
//       ctx->save_for_backward({x});
//       return mul(x, x);
//     }
//     static autograd::variable_list backward(autograd::AutogradContext* ctx, autograd::variable_list g) {
//       Tensor x = ctx->get_saved_variables()[0];
//       return {clamp_like_you_want(mul(mul(g[0], x), 2.0))};
//     }
//   };
//   Tensor y = ClippedSquare::apply(x);
//
// forward runs with grad mode off; backward gets one gradient per output (undefined for outputs
// that are not floating) and returns one per forward argument (undefined for non-tensor arguments
// and for inputs that need none). minigrad checks the count, shapes, dtypes and devices of what
// backward returns, and names the op when they are wrong.
#pragma once
#include <any>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "autograd.h"

namespace minigrad::autograd {

using variable_list = std::vector<Tensor>;

class AutogradContext {
 public:
  // Tensors backward will read (checked against later in-place changes).
  void save_for_backward(const variable_list& ts);
  variable_list get_saved_variables() const;
  variable_list saved() const { return get_saved_variables(); }
  // Anything else backward needs: ctx->saved_data["scale"] = 2.0; std::any_cast<double>(...).
  std::map<std::string, std::any> saved_data;
  // Whether forward argument i (counting every argument, tensor or not) needs a gradient.
  bool needs_input_grad(size_t i) const { return i < needs_.size() && needs_[i]; }
  // The op's name in errors: T::name if it has one, else its C++ type name.
  const std::string& op_name() const { return name_; }

 private:
  template <class T>
  friend struct Function;
  friend class CustomNode;
  std::string name_;
  std::vector<SavedTensor> saved_;
  std::vector<bool> needs_;
  bool released_ = false;
};

namespace detail {
std::string demangle(const char* mangled);
// Wraps forward's outputs for the tape: aliases outputs that are inputs (or carry history), and
// records the node when an input needs a gradient. Returns the outputs as the caller sees them.
variable_list finish_apply(const std::shared_ptr<AutogradContext>& ctx, size_t num_args,
                           const std::vector<int>& tensor_arg_index, const variable_list& inputs,
                           variable_list outputs,
                           std::function<variable_list(AutogradContext*, variable_list)> backward);

template <class A>
constexpr bool is_tensor_v = std::is_same_v<std::remove_cvref_t<A>, Tensor>;

template <class T, class = void>
struct has_name : std::false_type {};
template <class T>
struct has_name<T, std::void_t<decltype(T::name)>> : std::true_type {};
}  // namespace detail

template <class T>
struct Function {
  template <class... Args>
  static auto apply(Args&&... args) {
    auto ctx = std::make_shared<AutogradContext>();
    if constexpr (detail::has_name<T>::value) ctx->name_ = T::name;
    else ctx->name_ = detail::demangle(typeid(T).name());
    // The tensor arguments, and which argument each one is.
    variable_list inputs;
    std::vector<int> tensor_arg_index;
    int pos = 0;
    auto collect = [&](const auto& a) {
      if constexpr (detail::is_tensor_v<decltype(a)>) {
        inputs.push_back(a);
        tensor_arg_index.push_back(pos);
        ctx->needs_.push_back(GradMode::is_enabled() && a.defined() && a.requires_grad());
      } else {
        ctx->needs_.push_back(false);
      }
      ++pos;
    };
    (collect(args), ...);
    using Out = decltype(T::forward(ctx.get(), std::forward<Args>(args)...));
    static_assert(std::is_same_v<Out, Tensor> || std::is_same_v<Out, variable_list>,
                  "Function<T>::forward must return a Tensor or a variable_list");
    variable_list outputs;
    {
      NoGradGuard no_grad;
      if constexpr (std::is_same_v<Out, Tensor>) outputs = {T::forward(ctx.get(), std::forward<Args>(args)...)};
      else outputs = T::forward(ctx.get(), std::forward<Args>(args)...);
    }
    variable_list result = detail::finish_apply(ctx, sizeof...(Args), tensor_arg_index, inputs, std::move(outputs),
                                                [](AutogradContext* c, variable_list g) { return T::backward(c, std::move(g)); });
    if constexpr (std::is_same_v<Out, Tensor>) return result[0];
    else return result;
  }
};

}  // namespace minigrad::autograd
