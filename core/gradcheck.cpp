#include "gradcheck.h"

#include <cmath>
#include <sstream>

#include "../ops/ops.h"
#include "autograd.h"

namespace minigrad {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opts) {
  for (const auto& x : inputs)
    if (x.requires_grad())
      MG_CHECK(x.is_leaf() && x.is_contiguous(), "gradcheck: inputs that require grad must be "
                                                 "contiguous leaves, got shape ", x.sizes());
  for (const auto& x : inputs) x.zero_grad();
  Tensor out = fn(inputs);
  MG_CHECK(out.requires_grad(), "gradcheck: the function's output does not require grad");
  Generator gen(opts.seed);
  Tensor v = randn(out.sizes(), out.options(), &gen);
  out.backward(v);

  auto objective = [&]() {
    NoGradGuard ng;
    return sum(mul(fn(inputs), v)).item();
  };
  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> ga = g.defined() ? g.to_vector<double>() : std::vector<double>(size_t(x.numel()), 0.0);
    Tensor flat = x.detach().view({-1});
    for (int64_t j = 0; j < x.numel(); ++j) {
      Tensor e = flat[j];
      double orig = e.item();
      {
        NoGradGuard ng;
        e.fill_(orig + opts.eps);
      }
      double fp = objective();
      {
        NoGradGuard ng;
        e.fill_(orig - opts.eps);
      }
      double fm = objective();
      {
        NoGradGuard ng;
        e.fill_(orig);
      }
      double num = (fp - fm) / (2 * opts.eps), ana = ga[size_t(j)];
      double err = std::abs(num - ana);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (!(err <= opts.atol + opts.rtol * std::abs(num)) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "gradcheck: input " << i << " (shape " << x.sizes() << ") element " << j
           << ": backward gives " << ana << ", finite differences give " << num;
        res.message = os.str();
      }
    }
  }
  return res;
}

}  // namespace minigrad
