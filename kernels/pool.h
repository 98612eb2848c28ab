// Masked pooling over the sequence, for sequence-classification heads.
//   x [B, L, D], mask [B, L] (nonzero = real token; absent = all real) -> out [B, D]
//   mean: sum_t m_t x_t / max(1, sum_t m_t)
//   max:  max over real t of x_t (per channel; argmax saved for backward)
//   last: x at the last real position
// A row with no real token pools to 0 (and gets no gradient).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

enum class PoolMode : int { Mean = 0, Max = 1, Last = 2 };

struct PoolParams {
  const void* x = nullptr;         // [B, L, D] contiguous, dtype
  const float* mask = nullptr;     // [B, L] f32 (0 / 1), may be null
  void* out = nullptr;             // [B, D] dtype
  int64_t* index = nullptr;        // [B, D] source position for max / last (-1 if none); unused for mean
  const void* grad_out = nullptr;  // backward: [B, D]
  void* grad_x = nullptr;          // backward: [B, L, D], fully written
  int64_t B = 0, L = 0, D = 0;
  DType dtype = DType::F32;
  PoolMode mode = PoolMode::Mean;
};

void pool_fwd_cpu(const PoolParams& p);
void pool_bwd_cpu(const PoolParams& p);
// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void pool_fwd_cuda(const PoolParams& p);
void pool_bwd_cuda(const PoolParams& p);

}  // namespace mt::kernels
