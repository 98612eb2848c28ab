// Fused AdamW update over one f32 parameter tensor (see optim/adamw.h for the math).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct AdamWParams {
  float* param = nullptr;       // [n] f32 master
  const void* grad = nullptr;   // [n] grad_dtype
  float* exp_avg = nullptr;     // [n]
  float* exp_avg_sq = nullptr;  // [n]
  DType grad_dtype = DType::F32;
  int64_t n = 0;
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  float bias_correction1 = 1, bias_correction2 = 1;  // 1 - beta^t
  float grad_scale = 1;
};

void adamw_cpu(const AdamWParams& p);
#if defined(MT_WITH_CUDA)
void adamw_cuda(const AdamWParams& p);
#endif

}  // namespace mt::kernels
