// One decode step of the Mamba block's depthwise causal conv: a single new input per row and channel, with the
// state shift, the K taps and the SiLU fused.
//
// For row b < B and channel d < D, with s[b, j, d] (j < K-1) the previous K-1 inputs, oldest first:
//   pre       = bias[d] + sum_{j<K-1} weight[d, j] * s[b, j, d] + weight[d, K-1] * x[b, d]
//   u[b, d]   = silu(pre) (or pre without silu), stored in dtype
//   s[b, j, d] <- s[b, j+1, d] for j < K-2, s[b, K-2, d] <- x[b, d]
// This is causal_conv1d (kernels/causal_conv1d.h) with L = 1, initial_state = s and final_state written back to s.
// x and u have row strides ldx / ldu (elements) and may be the same buffer (u overwrites x in place).
//
// Dtypes: x, u, state, weight and bias share `dtype` (any float dtype on both backends); math runs in f32 (f64 for
// f64). weight [D, K], bias [D] (optional), state [B, K-1, D], all contiguous. 1 <= K <= kConvStepMaxK.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

constexpr int kConvStepMaxK = 8;  // the GPU keeps the taps and the state in registers

struct ConvStepParams {
  int64_t B = 0, D = 0, K = 0;
  DType dtype = DType::F32;
  bool silu = true;
  const void* x = nullptr;
  int64_t ldx = 0;
  void* u = nullptr;
  int64_t ldu = 0;
  void* state = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  bool pdl = false;  // CUDA only (kernels/cuda/decode_launch.cuh)
};

void conv_step_cpu(const ConvStepParams& p);

#if defined(MT_WITH_CUDA)
void conv_step_cuda(const ConvStepParams& p);
#endif

}  // namespace mt::kernels
