// Fused AdamW update over f32 parameter tensors (see optim/adamw.h for the math), with the loss-scale / clip
// factor grad_scale applied to the gradient first. adamw_multi_cuda updates many tensors per launch: up to
// kAdamWMaxTensors share one kernel, each block striding over every tensor of its launch; the per-element
// arithmetic is the same function as adamw_cuda's, so the results are bitwise equal.
//
// copy (optional, bf16 or f16, [n]): the low-precision weights the GEMMs read. The update writes the new master
// rounded to nearest even into it, the value cast() would produce, so the forward needs no separate cast.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace mt::kernels {

struct AdamWParams {
  float* param = nullptr;       // [n] f32 master
  const void* grad = nullptr;   // [n] grad_dtype
  float* exp_avg = nullptr;     // [n]
  float* exp_avg_sq = nullptr;  // [n]
  DType grad_dtype = DType::F32;
  void* copy = nullptr;  // [n] copy_dtype, or null
  DType copy_dtype = DType::BF16;
  int64_t n = 0;
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  float bias_correction1 = 1, bias_correction2 = 1;  // 1 - beta^t
  float grad_scale = 1;
};

// One tensor of a multi-tensor update: its own buffers, size and weight decay; the rest comes from the common
// AdamWParams (whose param / grad / exp_avg / exp_avg_sq / n / weight_decay are ignored).
struct AdamWTensor {
  float* param = nullptr;
  const void* grad = nullptr;
  DType grad_dtype = DType::F32;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  void* copy = nullptr;  // as AdamWParams::copy
  DType copy_dtype = DType::BF16;
  int64_t n = 0;
  float weight_decay = 0;
};

constexpr int kAdamWMaxTensors = 48;  // per launch: the kernel argument stays under 4 KiB

void adamw_cpu(const AdamWParams& p);
// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void adamw_cuda(const AdamWParams& p);
// All of ts in ceil(count / kAdamWMaxTensors) launches per (gradient dtype, copy dtype) (device memory, f32 / bf16
// / f16 / f64 gradients).
void adamw_multi_cuda(const AdamWParams& common, const std::vector<AdamWTensor>& ts);

}  // namespace mt::kernels
