// Gradient health checks for mixed-precision training: "does this gradient hold an inf or NaN?" and its sum of
// squares (for the global L2 norm used by clipping).
//
//   nonfinite(g) = OR_i  !isfinite(g_i)                  over the n elements of one packed buffer
//   sumsq(g)     = sum_i  (double) g_i^2                 accumulated in double whatever the storage dtype
//
// sumsq never hides a bad value: a NaN element makes it NaN, an inf element makes it +inf (squares are >= 0, so
// inf + inf stays inf and only NaN can win over inf). The finiteness test is a bit test on the exponent field on
// the GPU (an all-ones exponent is inf or NaN in f64/f32/bf16/f16), which no compiler flag can fold away; the CPU
// uses std::isfinite for f32/f64 and the same bit test for the 16-bit types. Host code is never built with
// -ffast-math (docs/DESIGN.md F7: it makes isnan(NaN) false with g++ 12).
//
// The CUDA entry points take MANY buffers at once so that a training step pays one host synchronisation for the
// whole model instead of one per tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace mt::kernels {

struct GradBuffer {
  const void* data = nullptr;  // [n] packed, dtype f32 / f64 / bf16 / f16
  DType dtype = DType::F32;
  int64_t n = 0;
};

// True when every element of g is finite (n == 0: true).
bool grad_all_finite_cpu(const GradBuffer& g);
// Sum of squares of g in double (NaN / +inf when an element is NaN / inf).
double grad_sum_squares_cpu(const GradBuffer& g);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// flags[i] = 1 when bufs[i] (device memory) holds an inf or NaN, else 0. One kernel per buffer writing into one
// device flag array, one device-to-host copy, one stream synchronisation.
std::vector<uint8_t> grad_nonfinite_flags_cuda(const std::vector<GradBuffer>& bufs);
// sums[i] = sum of squares of bufs[i] in double. One kernel per buffer writes per-block partials into one device
// buffer, one kernel reduces each buffer's partials in a fixed order (deterministic, no atomics), then one copy and
// one stream synchronisation.
std::vector<double> grad_sum_squares_cuda(const std::vector<GradBuffer>& bufs);

}  // namespace mt::kernels
