#include "module.h"

#include "../core/autograd.h"

namespace minigrad::nn {

Tensor Module::forward(const Tensor&) {
  MG_FAIL(name_, ": this module has no forward(Tensor); call its own methods instead");
}

namespace {
template <class Get>
void collect(const Module& m, const std::string& prefix, bool recurse, Get get,
             std::vector<std::pair<std::string, Tensor>>& out) {
  for (const auto& [n, t] : get(m)) out.emplace_back(prefix + n, t);
  if (recurse)
    for (const auto& [n, c] : m.named_children()) collect(*c, prefix + n + ".", true, get, out);
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect(*this, "", recurse, [](const Module& m) { return m.params_; }, out);
  return out;
}
std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect(*this, "", recurse, [](const Module& m) { return m.buffers_; }, out);
  return out;
}
std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}
std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}
std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (auto& [n, c] : children_) out.push_back(c);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::to(Device d) {
  NoGradGuard ng;
  for (auto& [n, t] : named_parameters()) t.set_data(t.detach().to(d));
  for (auto& [n, t] : named_buffers()) t.set_data(t.detach().to(d));
}

void Module::to(DType dt) {
  NoGradGuard ng;
  for (auto& [n, t] : named_parameters()) {
    MG_CHECK(is_floating(dt), name_, ".to: parameter ", n, " cannot become ", dt);
    t.set_data(t.detach().to(dt));
  }
  for (auto& [n, t] : named_buffers())
    if (is_floating(t.dtype())) t.set_data(t.detach().to(dt));
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.zero_grad();
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& t : parameters()) n += t.numel();
  return n;
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  MG_CHECK(!name.empty() && name.find('.') == std::string::npos, name_, ": invalid parameter name \"",
           name, "\"");
  for (auto& [n, p] : params_) MG_CHECK(n != name, name_, ": parameter \"", name, "\" registered twice");
  if (t.defined()) {
    t = t.detach();
    t.requires_grad_(requires_grad);
  }
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  for (auto& [n, b] : buffers_) MG_CHECK(n != name, name_, ": buffer \"", name, "\" registered twice");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  MG_CHECK(m, name_, ": submodule \"", name, "\" is null");
  for (auto& [n, c] : children_) MG_CHECK(n != name, name_, ": submodule \"", name, "\" registered twice");
  children_.emplace_back(name, std::move(m));
}

void Module::pretty_print(std::ostream& os) const { os << name_; }

void Module::print_tree(std::ostream& os, int indent) const {
  pretty_print(os);
  if (children_.empty()) {
    if (parameter_count() > 0) os << "  [" << parameter_count() << " params]";
    return;
  }
  os << "(\n";
  for (auto& [n, c] : children_) {
    os << std::string(size_t(indent + 2), ' ') << "(" << n << "): ";
    c->print_tree(os, indent + 2);
    os << "\n";
  }
  os << std::string(size_t(indent), ' ') << ")";
  if (indent == 0) os << "  [" << parameter_count() << " params]";
}

std::ostream& operator<<(std::ostream& os, const Module& m) {
  m.print_tree(os, 0);
  return os;
}

}  // namespace minigrad::nn
