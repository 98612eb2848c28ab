// Sum reduction kernel behind autograd/ops/reduce.h (sum, mean, sum_to_shape).
//
// The op layer brings any reduction into one packed 3-d form: x viewed as [outer, R, inner] with the reduced
// dims merged into the middle (a permuting copy first when they are not adjacent), and
//   y[o, i] = scale * sum_{r < R} x[o, r, i]             y packed as [outer, inner]
// (scale = 1 for sum, 1 / R for mean). The backward of a reduction is a broadcast of g (times scale) back to the
// input's shape: a zero-stride copy in the op layer, no kernel of its own.
//
// Accumulation: double for f64; float on the GPU for f32 / bf16 / f16 (tree order: warp shuffles, then a block
// reduction, then a second pass over per-block partials for long rows; no atomics, so results are deterministic).
// The CPU reference accumulates in double for every dtype (it defines "correct"; the GPU is compared to it).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct ReduceParams {
  const void* x = nullptr;   // packed [outer, R, inner]
  void* y = nullptr;         // packed [outer, inner]
  DType dtype = DType::F32;  // of x and y
  int64_t outer = 1, reduce = 1, inner = 1;
  double scale = 1.0;
};

void reduce_sum_fwd_cpu(const ReduceParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void reduce_sum_fwd_cuda(const ReduceParams& p);

}  // namespace mt::kernels
