#include "nn/layers.h"

#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/shape_ops.h"

namespace mt::nn {

Tensor as_compute(const Tensor& param, DType cd) { return param.dtype() == cd ? param : cached_cast(param, cd); }
DType state_dtype(DType cd) { return cd == DType::F64 ? DType::F64 : DType::F32; }

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  weight = &register_parameter("weight", Tensor::zeros({out, in}));
  if (with_bias) bias = &register_parameter("bias", Tensor::zeros({out}));
}

Tensor Linear::forward(const Tensor& x, DType cd) const {
  return linear(x, as_compute(*weight, cd), bias ? as_compute(*bias, cd) : Tensor());
}

Embedding::Embedding(int64_t n, int64_t dim) { weight = &register_parameter("weight", Tensor::zeros({n, dim})); }

Tensor Embedding::forward(const Tensor& ids, DType cd) const { return embedding(as_compute(*weight, cd), ids); }

CausalConv1d::CausalConv1d(int64_t channels, int64_t kernel, bool with_bias) {
  weight = &register_parameter("weight", Tensor::zeros({channels, 1, kernel}));
  if (with_bias) bias = &register_parameter("bias", Tensor::zeros({channels}));
}

Tensor CausalConv1d::forward(const Tensor& x, DType cd, bool apply_silu, Tensor* state, const Tensor& reset,
                             bool reverse) const {
  const int64_t d = weight->size(0), k = weight->size(2);
  CausalConv1dOut out =
      causal_conv1d(x, reshape(as_compute(*weight, cd), {d, k}), bias ? as_compute(*bias, cd) : Tensor(),
                    state ? *state : Tensor(), apply_silu, reset, reverse);
  if (state) *state = out.final_state;
  return out.y;
}

Norm::Norm(int64_t dim, bool layernorm, double eps) : eps_(eps) {
  weight = &register_parameter("weight", Tensor::ones({dim}));
  if (layernorm) bias = &register_parameter("bias", Tensor::zeros({dim}));
}

NormOut Norm::forward(const Tensor& x, const Tensor& residual, DType cd) const {
  const DType sd = state_dtype(cd);
  return bias ? layer_norm_residual(x, residual, as_compute(*weight, sd), as_compute(*bias, sd), eps_, cd)
              : rms_norm_residual(x, residual, as_compute(*weight, sd), eps_, cd);
}

}  // namespace mt::nn
