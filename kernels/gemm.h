// General matrix product on row-major strided matrices, batched:
//
//   for b in [0, batch):  C_b = alpha * op(A_b) @ op(B_b) + beta * C_b (+ bias broadcast over rows)
//
// op(A_b) is [M, K]: A_b stored row-major as [M, K] (trans_a = false: element (m, k) at m*lda + k) or as [K, M]
// (trans_a = true: element (m, k) at k*lda + m). Likewise op(B_b) is [K, N]: stored [K, N] (trans_b = false,
// (k, n) at k*ldb + n) or [N, K] (trans_b = true, (k, n) at n*ldb + k). C_b is [M, N] with row stride ldc.
// Batch b starts at A + b*stride_a (same for B, C); a stride of 0 shares one matrix across the batch.
// The flags let backward compute dA = dC @ B^T and dB = A^T @ dC straight from the saved tensors, without
// transposed copies.
//
// beta == 0 means C is write-only (never read: it may hold garbage or NaN). bias (optional, [N], same dtype as C)
// is added to every row of every C_b after the product: C = alpha*AB + beta*C + bias.
//
// Requirements (checked): ld of a row-major [R, C] operand >= max(1, C); M, N, K >= 0; batch >= 1.
// Accumulation: f32 for f32 / bf16 / f16 operands (on CUDA: CUBLAS_COMPUTE_32F, never TF32), f64 for f64.
// CPU: f32 and f64 only (the op layer converts bf16 / f16 through f32 copies).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct GemmParams {
  DType dtype = DType::F32;  // dtype of A, B, C and bias
  bool trans_a = false;
  bool trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  int64_t batch = 1;
  const void* A = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* B = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* C = nullptr;
  int64_t ldc = 0, stride_c = 0;
  double alpha = 1.0;
  double beta = 0.0;
  const void* bias = nullptr;  // [N] or null
  // CUDA only: A and B are bf16 / f16 (dtype) while C is f32 (accumulating products of 16-bit operands into an
  // f32 buffer across calls, beta = 1). No bias with it.
  bool c_f32 = false;
};

// Throws mt::Error(Internal) when the leading dimensions / sizes are inconsistent (a bug in the caller).
void gemm_check(const GemmParams& p);

void gemm_cpu(const GemmParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// cuBLASLt on mt::cuda::stream(); f64 through cublasDgemmStridedBatched. Row-major operands are handed to the
// column-major library as their transposes (C^T = op(B)^T op(A)^T), so no data moves.
void gemm_cuda(const GemmParams& p);

}  // namespace mt::kernels
