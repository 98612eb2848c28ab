// One decode step of the Mamba mixer after the conv: the x_proj outputs (dt | B | C), dt_proj, softplus, the
// selective state update, the D skip and the z gate, for a single token per row.
//
// Per row b < B (E = R + 2N):
//   xd[e]      = round(sum_{p<P} xproj[p, b, e])    (partial sums of x_proj, added in the fixed order of
//                                                     kernels/detail/decode_math.h partial_group_sum, then rounded
//                                                     to dtype, where the parallel model stores x_proj's output);
//                                                     dt = xd[0, R), Bm = xd[R, R+N), Cm = xd[R+N, E)
// per channel d < D:
//   delta      = round(sum_{r<R} dt_w[d, r] * dt[r])  (dt_proj, no bias; rounded like its GEMM output)
//   d'         = softplus(delta + dt_bias[d])
//   h[n]       = exp(d' * A[d, n]) * h[n] + d' * Bm[n] * u[b, d]       (state [B, D, N], updated in place)
//   y[b, d]    = (sum_n Cm[n] h[n] + D_skip[d] * u[b, d]) * silu(z[b, d])   (z optional), stored in dtype
// This is selective_scan (kernels/selective_scan.h) with L = 1, delta_softplus, initial_state = h and last_state
// written back to h.
//
// Dtypes: u, z, dt_w, y in `dtype` (any float dtype); xproj, dt_bias, A, D_skip and the state in the compute dtype
// (f64 for f64, else f32). u and z are read at u[b * ld + d], z[b * ld + d] (e.g. the two halves of in_proj's output).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct SsmStepParams {
  int64_t B = 0, D = 0, N = 0, R = 0;
  DType dtype = DType::F32;
  const void* u = nullptr;
  const void* z = nullptr;  // optional
  int64_t ld = 0;
  const void* xproj = nullptr;  // [P, B, R + 2N]
  int64_t P = 1;
  const void* dt_w = nullptr;     // [D, R]
  const void* dt_bias = nullptr;  // [D] optional
  const void* A = nullptr;        // [D, N]
  const void* D_skip = nullptr;   // [D] optional
  void* state = nullptr;          // [B, D, N]
  void* y = nullptr;              // [B, D]
  bool pdl = false;               // CUDA only (kernels/cuda/decode_launch.cuh)
};

void ssm_step_cpu(const SsmStepParams& p);

#if defined(MT_WITH_CUDA)
void ssm_step_cuda(const SsmStepParams& p);
#endif

}  // namespace mt::kernels
