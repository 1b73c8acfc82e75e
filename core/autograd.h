// minigrad: the tape-based autograd engine.
//
// An op whose inputs need gradients records a Node: its backward closure (written next to the
// forward, capturing only what backward reads) and one Edge per input to the input's own node.
// backward() walks these nodes in dependency order without recursion, and leaves' gradients
// accumulate through their AccumulateGrad node. No node is recorded when no input needs a grad
// or grad mode is off (NoGradGuard).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor.h"

namespace minigrad {

struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

// RAII: no op records a node while one is alive (on this thread).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// RAII: grad mode on or off while alive, restored after (LibTorch's AutoGradMode). Backward
// closures that recompute a differentiable part of their forward use AutoGradMode(true).
class AutoGradMode {
 public:
  explicit AutoGradMode(bool on) : prev_(GradMode::is_enabled()) { GradMode::set_enabled(on); }
  ~AutoGradMode() { GradMode::set_enabled(prev_); }
  AutoGradMode(const AutoGradMode&) = delete;
  AutoGradMode& operator=(const AutoGradMode&) = delete;

 private:
  bool prev_;
};

struct TensorMeta {
  Shape shape;
  DType dtype = kFloat32;
  Device device;
  static TensorMeta of(const Tensor& t) { return {t.sizes(), t.dtype(), t.device()}; }
};

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  uint32_t input_nr = 0;     // which output of fn the gradient belongs to
};

class Node {
 public:
  explicit Node(std::string name);
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return name_; }
  // One gradient per output in, one per input out (undefined where an input needs none).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grads) = 0;
  // Frees what backward saved (done after backward unless retain_graph).
  virtual void release_saved() {}
  bool needs_input_grad(size_t i) const { return i < next_edges.size() && next_edges[i].fn; }

  std::vector<Edge> next_edges;          // one per input
  std::vector<TensorMeta> inputs_meta;   // to check the gradients apply() returns
  std::vector<TensorMeta> outputs_meta;  // to zero-fill outputs that got no gradient
  std::vector<std::vector<std::pair<int, Hook>>> pre_hooks;  // per output
  uint64_t sequence_nr;
  std::string recorded_at;  // with anomaly detection on: the stack where the op was recorded

 private:
  std::string name_;
};

using BackwardFn = std::function<std::vector<Tensor>(std::vector<Tensor>& grads)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : Node(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  void release_saved() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
};

// Saves a tensor for backward: a detached alias (so outputs can be saved without a reference
// cycle and without keeping history alive) plus the storage version at the time of saving.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  // Returns the tensor; throws if an in-place op modified it after it was saved.
  Tensor unpack(const std::string& op) const;
  bool defined() const { return t_.defined(); }

 private:
  Tensor t_;
  uint64_t version_ = 0;
};

// True when t is contiguous, starts its storage, and no other tensor or view can see its memory:
// a backward may then write its result over an incoming gradient instead of allocating.
bool is_sole_owner(const Tensor& t);

// True when grad mode is on and at least one of ts requires grad.
bool needs_grad(const std::vector<Tensor>& ts);
template <class... Ts>
bool needs_grad(const Ts&... ts) {
  return GradMode::is_enabled() && (... || ts.requires_grad());
}

// Records one node producing `outputs` from `inputs`. The outputs become non-leaf tensors
// that require grad. Call only when needs_grad(inputs...) is true.
std::shared_ptr<Node> record(std::string name, const std::vector<Tensor>& inputs,
                             const std::vector<Tensor>& outputs, BackwardFn fn);
// Same, for an already built node (custom Function nodes).
void record_node(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs);

// Runs backward from several roots at once.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
              bool retain_graph = false);

namespace autograd {
// Anomaly detection, as torch.autograd.set_detect_anomaly (process-wide): while on, every op that
// records a node checks its outputs, and backward checks every gradient an op returns; the first
// non-finite one raises an Error naming the op, its inputs' shapes (and which of them were already
// non-finite) and the stack where the op was recorded. It costs a check per op and a stack trace
// per node: for debugging, not for training runs.
void set_detect_anomaly(bool on);
bool is_anomaly_enabled();
// RAII: anomaly detection on (or off) while alive, restored after (torch.autograd.detect_anomaly).
class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool on = true) : prev_(is_anomaly_enabled()) { set_detect_anomaly(on); }
  ~DetectAnomalyGuard() { set_detect_anomaly(prev_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};
// True when every value of t is finite (always for integer tensors); any device.
bool all_finite(const Tensor& t);
}  // namespace autograd

namespace detail {
// Releases a node without recursion, so a 100,000-op chain frees without deep stacks.
void release_node(std::shared_ptr<Node>&& n);
}  // namespace detail

}  // namespace minigrad

namespace minigrad::detail {
// The node that accumulates into a leaf's .grad(), created on first use and kept by the leaf.
std::shared_ptr<Node> grad_accumulator(const std::shared_ptr<TensorImpl>& leaf);
int next_hook_id();
}  // namespace minigrad::detail
