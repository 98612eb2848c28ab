// Basic layers as Modules. Each holds fp32 master parameters under the names HuggingFace uses ("weight",
// "bias") and casts them to the compute dtype at use (nn/module.h).
#pragma once

#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/norm.h"
#include "nn/module.h"

namespace mt::nn {

// Cast a master parameter to the compute dtype, recording the cast (gradients reach the fp32 master). The copy is
// kept with the parameter and reused until the master changes (cached_cast); AdamW writes the new copy itself.
Tensor as_compute(const Tensor& param, DType cd);
// The dtype of SSM state, A / D / dt bias and norm weights for a compute dtype: f64 for f64, else f32.
DType state_dtype(DType cd);

// y = x @ weight^T + bias; weight [out, in].
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias);
  Tensor forward(const Tensor& x, DType cd) const;
  Tensor* weight;
  Tensor* bias = nullptr;
};

// weight [V, d]; ids [...] -> [..., d].
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim);
  Tensor forward(const Tensor& ids, DType cd) const;
  Tensor* weight;
};

// Depthwise causal conv over time, weight [D, 1, K] (PyTorch's Conv1d(groups=D) layout), optional bias [D].
// state (optional, in/out): the last K-1 inputs [B, K-1, D], for streaming / step-by-step use.
class CausalConv1d : public Module {
 public:
  CausalConv1d(int64_t channels, int64_t kernel, bool bias);
  // reset (optional): [B, L] i32 document starts; reverse: the conv of the flipped sequence, read in place, with no
  // state (autograd/ops/causal_conv1d.h).
  Tensor forward(const Tensor& x, DType cd, bool apply_silu, Tensor* state, const Tensor& reset = Tensor(),
                 bool reverse = false) const;
  Tensor* weight;
  Tensor* bias = nullptr;
};

// RMSNorm (x * rsqrt(mean(x^2) + eps) * w) or LayerNorm, with the residual add fused in front:
// residual_out = x + residual (fp32), y = norm(residual_out) in the compute dtype.
class Norm : public Module {
 public:
  Norm(int64_t dim, bool layernorm, double eps);
  NormOut forward(const Tensor& x, const Tensor& residual, DType cd) const;
  Tensor* weight;
  Tensor* bias = nullptr;  // layernorm only

 private:
  double eps_;
};

}  // namespace mt::nn
