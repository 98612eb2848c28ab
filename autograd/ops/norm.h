// RMSNorm / LayerNorm over the last dimension, plain and with the pre-norm block's fused residual add.
#pragma once

#include "core/tensor.h"

namespace mt {

struct NormOut {
  Tensor y;         // normalised output, out_dtype
  Tensor residual;  // residual_out = x + residual, kept in f32 (f64 when x is f64): the residual stream
};

// Pre-norm block entry (Mamba: residual = h + residual; h = norm(residual)). x [..., H] any float dtype;
// residual [..., H] in f32 (f64 when x is f64) or undefined (the first block: residual_out = x as f32);
// weight (and bias) [H] in f32 or f64. Statistics in f32 (f64 for f64 x).
//   residual_out = x + residual
//   rms:   y = residual_out * rsqrt(mean(residual_out^2 over the last dim) + eps) * weight
//   layer: y = (residual_out - mean) * rsqrt(var + eps) * weight + bias      (biased variance; bias optional)
// Both outputs are differentiable: the gradient reaching residual_out (the next block's residual input) adds to
// the one coming back through the norm. Gradients for x, residual, weight and bias have their input's dtype.
NormOut rms_norm_residual(const Tensor& x, const Tensor& residual, const Tensor& weight, double eps, DType out_dtype);
NormOut layer_norm_residual(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                            double eps, DType out_dtype);

// Plain norms: y has x's dtype; no residual output.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

}  // namespace mt
