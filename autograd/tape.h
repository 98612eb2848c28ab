// The tape: differentiable ops append a Node in execution order; backward() walks the tape in reverse.
//
// Ownership: a Node holds shared_ptrs to its inputs' AutogradMeta (where input gradients accumulate) and the
// tensors it saved for backward; it refers to its outputs' metas weakly. A tensor produced by a recorded op
// carries its AutogradMeta (grad_fn = the node). Saved tensors are released as soon as the node's backward ran,
// and the tape is cleared by backward(), so activation memory is freed progressively during backward.
//
// Leaves (parameters, inputs marked requires_grad) accumulate .grad across backward calls (gradient
// accumulation); call zero_grad / set it undefined to reset. A leaf's "grad ready" hooks run once per backward,
// as soon as the last node that uses the leaf has run (its gradient is final then): data parallelism starts the
// all-reduce of that parameter's bucket from there while backward continues.
//
// Threading: the current tape and the grad mode are per thread (thread_local). That is the only state outside
// tensors; it exists so that ops can be called like functions.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt {

class Node;

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;                  // accumulated gradient (leaves: persists; non-leaves: freed after use)
  std::weak_ptr<Node> grad_fn;  // producing node; expired for leaves
  bool is_leaf = true;
  int output_nr = 0;  // which output of grad_fn this tensor is
  std::string name;   // parameter name, for error messages and hooks
  std::vector<std::function<void(const Tensor& grad)>> grad_ready_hooks;  // leaves only
  // A bf16 / f16 copy of an f32 tensor (cached_cast: the GEMMs' weights): an op may hand this tensor's gradient in
  // f32 (ops::grad_dtype), which the cast's backward passes to the f32 master as it is, neither rounded to 16 bits
  // nor converted back.
  bool grad_may_be_f32 = false;
};

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Gradients w.r.t. each input (undefined where an input needs none), given gradients w.r.t. each output
  // (undefined where no gradient reached that output; at least one is defined).
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;
  // Drop saved tensors (called right after backward ran).
  virtual void release() {}

  std::vector<std::shared_ptr<AutogradMeta>> inputs;  // null where the input does not require grad
  std::vector<std::weak_ptr<AutogradMeta>> outputs;
  std::vector<Shape> output_shapes;  // to build zero grads for outputs that got none
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  // False where backward takes an undefined gradient for an output that got none (the selective scan's last state),
  // so the tape makes no zero tensor for it.
  bool zero_fill_missing = true;
};

class Tape {
 public:
  void record(std::shared_ptr<Node> node) { nodes_.push_back(std::move(node)); }
  size_t size() const { return nodes_.size(); }
  void clear() { nodes_.clear(); }
  // Exchange the recorded nodes with another tape's (a nested backward runs on a tape of its own).
  void swap(Tape& other) { nodes_.swap(other.nodes_); }
  // Run backward from `root` (gradient `seed`, ones if undefined) over every recorded node, then clear the tape.
  void backward(const Tensor& root, const Tensor& seed = Tensor());
  // The same from several outputs at once, each with its gradient (ones where undefined).
  void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds);

 private:
  std::vector<std::shared_ptr<Node>> nodes_;
};

Tape& current_tape();

// ---- grad mode ----
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
// Grad mode on for a scope (a recompute inside a backward, which runs with grad mode off).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace mt
