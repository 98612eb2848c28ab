// Differentiable matrix products.
// GPU: cuBLASLt with f32 accumulation (bf16 / f16 operands run on the tensor cores; f32 as plain f32, no TF32).
// CPU: a cache-blocked loop, parallel over output rows (OpenMP); f64 for f64 tensors, else f32.
#pragma once

#include "core/tensor.h"

namespace mt {

// a [..., M, K] @ b [K, N] or b [..., K, N] (batch dims must match exactly) -> [..., M, N].
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] with weight [out, in] (PyTorch layout) and optional bias [out] -> [..., out] = x @ weight^T + bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace mt
