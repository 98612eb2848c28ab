// AdamW with decoupled weight decay (Loshchilov & Hutter), fp32 master weights, parameter groups.
//   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
// Default grouping (docs/DESIGN.md "Training recipe of the published models"): no weight decay on A_log, D, biases and
// norm weights.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/adamw.h"

namespace mt::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct ParamEntry {
  std::string name;
  Tensor* param;  // fp32 master (a requires_grad leaf)
  bool decay;
  Tensor exp_avg, exp_avg_sq;  // f32, same device
  double lr_scale = 1.0;       // this parameter's LR is lr * lr_scale (a head's own LR; 0 freezes it)
};

// True for parameters that get weight decay by default: matrices and embeddings, not A_log / D / biases / norms.
bool default_decay(const std::string& name, const Tensor& param);

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, Tensor*>>& params, const AdamWOptions& opt);
  // One update with learning rate lr (times each entry's lr_scale) using each parameter's .grad (parameters without a
  // gradient are skipped). An entry with lr_scale 0 keeps its weights exactly; its moments still update.
  // grad_scale multiplies every gradient first (1/loss_scale, clip factor), fused into the update. A parameter
  // holding a bf16 / f16 copy (cached_cast, nn::as_compute) gets it rewritten from the new master in the same
  // kernel, bitwise equal to cast(), and marked fresh.
  void step(double lr, double grad_scale = 1.0);
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  std::vector<ParamEntry>& entries() { return entries_; }
  const AdamWOptions& options() const { return opt_; }

 private:
  std::vector<ParamEntry> entries_;
  AdamWOptions opt_;
  int64_t step_ = 0;
};

// Global L2 norm of all gradients: same as grad_global_norm (optim/grad_check.h): f64 accumulation, one device
// synchronisation, NaN / inf when any gradient element is.
double global_grad_norm(const std::vector<Tensor*>& params);

}  // namespace mt::optim
