// Cross-entropy fused with the LM head, in chunks of rows: the mean loss of logits = h @ W^T without ever holding
// the [N, V] logits (N rows, H hidden, V vocab).
//
//   logits_i = W h_i                        (h [N, H], W [V, H]; one row of logits is [V])
//   valid_i  = (t_i != ignore_index),  count = sum_i valid_i  (counted by the caller)
//   loss     = (1 / count) * sum_{i valid} (lse_i - logits_{i, t_i})        (0, with zero gradients, if count == 0)
// With the gradient (the upstream scalar g is applied afterwards by the autograd op):
//   P_i  = valid_i * (softmax(logits_i) - onehot(t_i)) / count        [V]
//   dh_i = P_i W                        [H]
//   dW   = sum_i P_i^T h_i              [V, H]
//
// Rows go in chunks of `chunk`: one GEMM writes the chunk's logits into a scratch [chunk, V] buffer, one row kernel
// computes each row's log-sum-exp and loss and (with the gradient) overwrites the row with P_i, then two GEMMs
// give dh for the chunk and add the chunk's share of dW. Extra memory: the scratch, dh and dW.
//
// Dtypes: h, W and the scratch share `dtype` (CUDA: f32 / f64 / bf16 / f16; CPU: f32 / f64, the op converts).
// row_loss, loss, dh and dW are in the compute dtype (f32, or f64 for f64): the GEMMs write f32 even for bf16
// operands, and dW is accumulated over chunks in f32. The logits and P are rounded to `dtype` between the GEMMs,
// exactly as the unfused linear + cross_entropy does with its [N, V] logits and their gradient. Targets must already be
// checked (in [0, V) or ignore_index). The loss is summed over rows in a fixed order (deterministic); dW's chunk sum is
// in chunk order.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/ignore_index.h"
#include "kernels/gemm.h"

namespace mt::kernels {

struct LinearCrossEntropyParams {
  DType dtype = DType::F32;         // h, weight, scratch
  DType target_dtype = DType::I64;  // I32 or I64
  int64_t N = 0, H = 0, V = 0;
  int64_t chunk = 0;  // rows per chunk, 1 <= chunk <= N
  int64_t ignore_index = kIgnoreIndex;
  int64_t count = 0;              // number of valid targets
  const void* h = nullptr;        // [N, H]
  const void* weight = nullptr;   // [V, H]
  const void* targets = nullptr;  // [N]
  void* scratch = nullptr;        // [chunk, V] dtype
  void* row_loss = nullptr;       // [N] compute dtype (0 for ignored rows)
  void* loss = nullptr;           // [] compute dtype
  void* dh = nullptr;             // [N, H] compute dtype, or nullptr (no gradient)
  void* dweight = nullptr;        // [V, H] compute dtype; set iff dh is
};

// The three products of the chunk of n rows starting at r0, as GEMM calls (both backends use them):
//   logits:  scratch[n, V] = h[r0 : r0 + n] @ W^T
//   dh:      dh[r0 : r0 + n] = P @ W                (P: the scratch after the row kernel)
//   dweight: dW (+)= P^T @ h[r0 : r0 + n]
// dh and dweight write the compute dtype (c_f32 for 16-bit operands); dweight overwrites at r0 == 0, then adds.
struct LinearCrossEntropyGemms {
  GemmParams logits, dh, dweight;
};
LinearCrossEntropyGemms linear_cross_entropy_gemms(const LinearCrossEntropyParams& p, int64_t r0, int64_t n);

void linear_cross_entropy_cpu(const LinearCrossEntropyParams& p);
// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void linear_cross_entropy_cuda(const LinearCrossEntropyParams& p);

}  // namespace mt::kernels
