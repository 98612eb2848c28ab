// Differentiable matrix products.
// GPU: cuBLASLt with f32 accumulation (bf16 / f16 operands run on the tensor cores; f32 as plain f32, no TF32).
// CPU: a cache-blocked loop, parallel over output rows (OpenMP); f64 for f64 tensors, else f32.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace mt {

// a [..., M, K] @ b [K, N] or b [..., K, N] (batch dims must match exactly) -> [..., M, N].
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] with weight [out, in] (PyTorch layout) and optional bias [out] -> [..., out] = x @ weight^T + bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// linear(x, weight, bias) cut along its last dim into parts of `sizes` (each >= 1, summing to out), each part packed:
// part i is x @ W_i^T + b_i with W_i, b_i the i-th block of weight's rows and bias, one GEMM per part. Its backward
// writes each part's weight and bias gradient into that part's rows (a part with no gradient gets zeros there) and
// sums dx in the GEMMs (the second and later parts accumulate into the first's result), so there are no copies of
// the parts or their gradients and no adds of full-size gradients. Mamba's in_proj gives x and z this way.
std::vector<Tensor> linear_split(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const std::vector<int64_t>& sizes);

}  // namespace mt
