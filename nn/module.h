// Module: a tree of named parameters. Names are dotted paths ("backbone.layers.3.mixer.in_proj.weight") that
// match HuggingFace's MambaForCausalLM state-dict names (docs/DESIGN.md), so checkpoints and safetensors files
// map one-to-one onto named_parameters().
//
// Parameters are fp32 master tensors (requires_grad leaves). Forward passes cast them to the compute dtype at
// use (a differentiable cast), so the GEMMs see bf16 / f16 operands while gradients accumulate into the fp32
// masters. A_log, D, dt bias and norm weights stay fp32 in every precision (docs/DESIGN.md "Numerics").
#pragma once

#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mt::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter below this module, depth first in registration order, with full dotted names.
  std::vector<std::pair<std::string, Tensor*>> named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor*> parameters() const;
  int64_t num_parameters() const;
  // Parameter by full name; throws mt::Error(Checkpoint) listing close names when absent.
  Tensor& parameter(const std::string& name) const;

  // Move / convert every parameter (keeps requires_grad and names).
  void to(Device dev);
  void to(DType dtype);
  void zero_grad();
  void set_training(bool on);
  bool training() const { return training_; }

  // name -> tensor copies on the CPU (for saving).
  std::map<std::string, Tensor> state_dict() const;
  // Copy tensors into parameters. strict: every parameter must be present and no unknown name may appear.
  // Shapes must match exactly ("size mismatch for <name>: file [..], model [..]"); dtypes are converted.
  void load_state_dict(const std::map<std::string, Tensor>& tensors, bool strict = true,
                       const std::string& source = "state dict");

 protected:
  Tensor& register_parameter(const std::string& name, Tensor value);
  void register_module(const std::string& name, Module& child);

 private:
  std::deque<std::pair<std::string, Tensor>> params_;  // owned; a deque keeps addresses stable
  // Parameters and children in registration order (a child is listed where it was registered, so names come
  // out in HF order: embeddings, layers.*, norm_f).
  struct Entry {
    std::string name;
    Tensor* param = nullptr;
    Module* child = nullptr;
  };
  std::vector<Entry> entries_;
  bool training_ = true;
};

}  // namespace mt::nn
