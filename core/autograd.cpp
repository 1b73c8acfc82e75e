#include "autograd.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <unordered_map>

#include "../ops/ops.h"

namespace minigrad {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};
std::atomic<int> g_hook_id{0};
thread_local std::vector<std::shared_ptr<Node>>* t_pending = nullptr;
std::atomic<bool> g_anomaly{false};

// The calling stack, one frame a line: the function's name where the dynamic symbol table has it
// (link with -rdynamic for a program's own functions), else the binary and the offset that
// `addr2line -e <binary> <offset>` resolves.
std::string stack_here() {
  void* frames[48];
  const int n = ::backtrace(frames, 48);
  std::ostringstream os;
  for (int i = 2; i < n; ++i) {  // skip stack_here and record_node
    Dl_info info{};
    os << "\n    #" << i - 2 << ' ';
    if (::dladdr(frames[i], &info) && info.dli_sname) {
      int st = 0;
      char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &st);
      os << (st == 0 && d ? d : info.dli_sname);
      std::free(d);
    } else if (info.dli_fname) {
      os << info.dli_fname << " +0x" << std::hex
         << (reinterpret_cast<uintptr_t>(frames[i]) - reinterpret_cast<uintptr_t>(info.dli_fbase)) << std::dec;
    } else {
      os << frames[i];
    }
  }
  return os.str();
}

std::string shapes_of(const std::vector<TensorMeta>& ms, const std::vector<Tensor>* values) {
  std::ostringstream os;
  for (size_t i = 0; i < ms.size(); ++i) {
    using detail::operator<<;
    os << (i ? ", " : "") << ms[i].shape;
    if (values && (*values)[i].defined() && !autograd::all_finite((*values)[i])) os << " (non-finite)";
  }
  return os.str();
}

// Accumulates into a leaf's .grad(). Holds the leaf weakly: a dropped leaf needs no gradient.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const std::shared_ptr<TensorImpl>& leaf)
      : Node("AccumulateGrad"), leaf_(leaf) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    auto leaf = leaf_.lock();
    if (!leaf || !grads[0].defined()) return {};
    Tensor& g = grads[0];
    if (leaf->grad) {
      Tensor(leaf->grad).add_(g);
    } else {
      // Steal the incoming buffer when nobody else can see it; otherwise copy it.
      leaf->grad = (is_sole_owner(g) ? g : g.clone()).impl_ptr();
    }
    return {};
  }

 private:
  std::weak_ptr<TensorImpl> leaf_;
};
}  // namespace

bool is_sole_owner(const Tensor& t) {
  return t.defined() && t.is_contiguous() && t.impl_ptr().use_count() == 1 &&
         t.storage().use_count() == 1 && t.storage_offset() == 0;
}

bool GradMode::is_enabled() { return t_grad_enabled; }
void GradMode::set_enabled(bool on) { t_grad_enabled = on; }

Node::Node(std::string name) : sequence_nr(g_sequence++), name_(std::move(name)) {}
Node::~Node() {
  for (auto& e : next_edges) detail::release_node(std::move(e.fn));
}

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grads) {
  MG_CHECK(fn_, name(), ": backward through this part of the graph a second time, but its saved "
                "tensors were already freed; pass retain_graph=true to the first backward()");
  return fn_(grads);
}

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  t_ = t.detach();
  version_ = t.storage()->version.load();
}

Tensor SavedTensor::unpack(const std::string& op) const {
  if (t_.defined())
    MG_CHECK(t_.storage()->version.load() == version_, op,
             ": a tensor of shape ", t_.sizes(), " saved for its backward was modified by an "
             "in-place op (version ", t_.storage()->version.load(), ", expected ", version_, ")");
  return t_;
}

bool needs_grad(const std::vector<Tensor>& ts) {
  if (!GradMode::is_enabled()) return false;
  for (const auto& t : ts)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record_node(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs) {
  node->next_edges.reserve(inputs.size());
  for (const auto& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn()) e = {in.grad_fn(), in.unsafe_impl()->output_nr};
      else e = {detail::grad_accumulator(in.impl_ptr()), 0};
    }
    node->next_edges.push_back(std::move(e));
    node->inputs_meta.push_back(in.defined() ? TensorMeta::of(in) : TensorMeta{});
  }
  if (autograd::is_anomaly_enabled()) {
    node->recorded_at = stack_here();
    for (size_t i = 0; i < outputs.size(); ++i)
      MG_CHECK(autograd::all_finite(outputs[i]), "anomaly detected: ", node->name(), " produced non-finite values in ",
               "output ", i, " of shape ", outputs[i].sizes(), " from inputs of shapes ", shapes_of(node->inputs_meta, &inputs),
               "; the op was recorded at:", node->recorded_at);
  }
  node->pre_hooks.resize(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* o = outputs[i].unsafe_impl();
    MG_CHECK(!o->grad_fn && (o->requires_grad == false), node->name(),
             ": output ", i, " already has autograd history");
    MG_CHECK(is_floating(o->dtype), node->name(), ": output ", i, " is ", o->dtype,
             "; only floating outputs can carry gradients");
    o->requires_grad = true;
    o->grad_fn = node;
    o->output_nr = uint32_t(i);
    node->outputs_meta.push_back(TensorMeta::of(outputs[i]));
  }
}

namespace autograd {
void set_detect_anomaly(bool on) { g_anomaly = on; }
bool is_anomaly_enabled() { return g_anomaly.load(std::memory_order_relaxed); }
bool all_finite(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype()) || t.numel() == 0) return true;
  NoGradGuard ng;
  return std::isfinite(sum(sub(t.detach(), t.detach())).item());  // x - x is NaN exactly where x is not finite
}
}  // namespace autograd

std::shared_ptr<Node> record(std::string name, const std::vector<Tensor>& inputs,
                             const std::vector<Tensor>& outputs, BackwardFn fn) {
  auto node = std::make_shared<FunctionNode>(std::move(name), std::move(fn));
  record_node(node, inputs, outputs);
  return node;
}

namespace detail {

void release_node(std::shared_ptr<Node>&& n) {
  if (!n) return;
  if (n.use_count() > 1) {  // not the last owner: dropping it destroys nothing
    n.reset();
    return;
  }
  if (t_pending) {  // already draining: queue it instead of recursing
    t_pending->push_back(std::move(n));
    return;
  }
  std::vector<std::shared_ptr<Node>> pending;
  t_pending = &pending;
  pending.push_back(std::move(n));
  while (!pending.empty()) {
    std::shared_ptr<Node> x = std::move(pending.back());
    pending.pop_back();
    x.reset();  // its destructor queues its own edges
  }
  t_pending = nullptr;
}

std::shared_ptr<Node> grad_accumulator(const std::shared_ptr<TensorImpl>& leaf) {
  if (!leaf->grad_accumulator) {
    leaf->grad_accumulator = std::make_shared<AccumulateGrad>(leaf);
    leaf->grad_accumulator->pre_hooks.resize(1);
    leaf->grad_accumulator->outputs_meta.push_back(
        {leaf->shape, leaf->dtype, leaf->storage->device});
  }
  return leaf->grad_accumulator;
}

int next_hook_id() { return ++g_hook_id; }

}  // namespace detail

namespace {

void check_grad(const Node& node, size_t i, const Tensor& g) {
  const TensorMeta& m = node.inputs_meta[i];
  MG_CHECK(g.sizes() == m.shape && g.dtype() == m.dtype && g.device() == m.device, node.name(),
           ": backward returned a gradient of shape ", g.sizes(), " (", g.dtype(), ", ", g.device(),
           ") for input ", i, ", which has shape ", m.shape, " (", m.dtype, ", ", m.device, ")");
}

}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  MG_CHECK(roots.size() == grads.size(), "backward: got ", roots.size(), " tensors but ", grads.size(),
           " gradients");
  NoGradGuard no_grad;  // backward itself records nothing
  std::vector<std::pair<Edge, Tensor>> starts;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    MG_CHECK(r.defined() && r.requires_grad(), "backward: tensor ", i, " (shape ",
             r.defined() ? r.sizes() : Shape{}, ") does not require grad and has no grad_fn");
    Tensor g = grads[i];
    if (!g.defined()) {
      MG_CHECK(r.numel() == 1, "backward: grad can be implicitly created only for tensors with one "
                               "element, but this one has shape ", r.sizes(),
               "; pass a gradient of that shape, or reduce (e.g. sum()) first");
      g = ones_like(r);
    } else {
      MG_CHECK(g.sizes() == r.sizes() && g.dtype() == r.dtype() && g.device() == r.device(),
               "backward: gradient of shape ", g.sizes(), " (", g.dtype(), ", ", g.device(),
               ") does not match the tensor's shape ", r.sizes(), " (", r.dtype(), ", ", r.device(), ")");
    }
    Edge e = r.grad_fn() ? Edge{r.grad_fn(), r.unsafe_impl()->output_nr}
                         : Edge{detail::grad_accumulator(r.impl_ptr()), 0};
    starts.emplace_back(std::move(e), std::move(g));
  }

  // Count, for each node, how many edges lead into it (iteratively: no recursion).
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack;
  for (auto& [e, g] : starts) {
    if (!deps.count(e.fn.get())) {
      deps[e.fn.get()] = 0;
      stack.push_back(e.fn.get());
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      auto [it, fresh] = deps.try_emplace(e.fn.get(), 0);
      ++it->second;
      if (fresh) stack.push_back(e.fn.get());
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto accumulate = [&](Node* n, uint32_t slot, Tensor g) {
    auto& buf = buffers[n];
    if (buf.empty()) buf.resize(n->pre_hooks.size());
    MG_CHECK(slot < buf.size(), n->name(), ": gradient routed to output ", slot, " of ", buf.size());
    buf[slot] = buf[slot].defined() ? add(buf[slot], g) : std::move(g);
  };
  std::vector<std::shared_ptr<Node>> ready;
  for (auto& [e, g] : starts) accumulate(e.fn.get(), e.input_nr, std::move(g));
  for (auto& [e, g] : starts)
    if (deps[e.fn.get()] == 0 && std::find(ready.begin(), ready.end(), e.fn) == ready.end())
      ready.push_back(e.fn);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    std::vector<Tensor> in = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    in.resize(node->pre_hooks.size());
    bool any = false;
    for (const auto& g : in) any = any || g.defined();
    std::vector<Tensor> out;
    if (any) {
      for (size_t i = 0; i < in.size(); ++i) {
        if (!in[i].defined()) {
          const TensorMeta& m = node->outputs_meta[i];
          in[i] = zeros(m.shape, TensorOptions(m.dtype).device(m.device));
        }
        for (auto& [id, hook] : node->pre_hooks[i]) {
          Tensor r = hook(in[i]);
          if (r.defined()) {
            MG_CHECK(r.sizes() == in[i].sizes() && r.dtype() == in[i].dtype(), node->name(),
                     ": a hook replaced a gradient of shape ", in[i].sizes(), " (", in[i].dtype(),
                     ") with one of shape ", r.sizes(), " (", r.dtype(), ")");
            in[i] = std::move(r);
          }
        }
      }
      out = node->apply(std::move(in));
      if (!node->next_edges.empty())
        MG_CHECK(out.size() == node->next_edges.size(), node->name(), ": backward returned ",
                 out.size(), " gradients, but the op has ", node->next_edges.size(), " inputs");
      // what this node saved is read by nobody else: free it now, not at the end of backward
      if (!retain_graph) node->release_saved();
    }
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.fn) continue;
      if (any && out[i].defined()) {
        check_grad(*node, i, out[i]);
        if (autograd::is_anomaly_enabled())
          MG_CHECK(autograd::all_finite(out[i]), "anomaly detected: the backward of ", node->name(),
                   " returned a non-finite gradient for input ", i, " (inputs of shapes ",
                   shapes_of(node->inputs_meta, nullptr), "); the op was recorded at:",
                   node->recorded_at.empty() ? std::string(" (before anomaly detection was on)") : node->recorded_at);
        accumulate(e.fn.get(), e.input_nr, std::move(out[i]));
      }
      if (--deps[e.fn.get()] == 0) ready.push_back(e.fn);
    }
  }
}

}  // namespace minigrad
