// One decode step of the Mamba mixer after in_proj, for a single token per row: the x_proj outputs (dt | B | C),
// dt_proj, softplus, the selective state update, the D skip and the z gate; in row mode also the conv step and x_proj
// itself.
//
// Per row b < B (E = R + 2N), the x_proj outputs xd[e] come from either
//   partials (x_proj_w null):  xd[e] = round(sum_{p<P} xproj[p, b, e]), the partial sums decode_gemv's MixerIn wrote,
//                              added in the fixed order of kernels/detail/decode_math.h partial_group_sum;
//   row mode (x_proj_w given): first, when conv_w is given, the conv step of every channel (kernels/detail/
//                              decode_math.h conv_pre; as causal_conv1d with L = 1): pre = conv(x = u[b, d], state),
//                              u[b, d] <- round(silu(pre)) in place, conv_state shifted; then
//                              xd[e] = round(sum_d x_proj_w[e, d] * u[b, d]).
// round() stores in dtype and reads back, where the parallel model stores x_proj's output.
// dt = xd[0, R), Bm = xd[R, R+N), Cm = xd[R+N, E); per channel d < D:
//   delta      = round(sum_{r<R} dt_w[d, r] * dt[r])  (dt_proj, no bias; rounded like its GEMM output)
//   d'         = softplus(delta + dt_bias[d])
//   h[n]       = exp(d' * A[d, n]) * h[n] + d' * Bm[n] * u[b, d]       (state [B, D, N], updated in place)
//   y[b, d]    = (sum_n Cm[n] h[n] + D_skip[d] * u[b, d]) * silu(z[b, d])   (z optional), stored in dtype
// This is selective_scan (kernels/selective_scan.h) with L = 1, delta_softplus, initial_state = h and last_state
// written back to h.
//
// Dtypes: u, z, dt_w, y, conv_w, conv_b, conv_state, x_proj_w in `dtype` (any float dtype); xproj, dt_bias, A,
// D_skip and the state in the compute dtype (f64 for f64, else f32). u and z are read at u[b * ld + d],
// z[b * ld + d] (e.g. the two halves of in_proj's output). conv_w [D, K] (1 <= K <= kConvMaxK), conv_b [D],
// conv_state [B, K-1, D], x_proj_w [E, D].
// CUDA: the state update runs 16 threads per channel (states and dt_proj's terms split among them, sums by shuffles),
// 16 channels per block; partials mode sums the partials per block first. Past about one wave of such blocks, 4
// threads per channel, or in row mode with xrow (N <= 16) 4 threads per row and channel, each holding 4 consecutive
// states, in tiles of 8 rows x 8 channels. Row mode with xrow: the conv step, then x_proj as a GEMM into xrow (f32
// accumulation, rounded to dtype as above), then the update; without xrow one block per row does all three. The update
// kernels issue `prefetch` (L2 prefetches of weights that later kernels read) before waiting for the previous kernel.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/detail/l2_prefetch.h"

namespace mt::kernels {

constexpr int kConvMaxK = 8;  // conv width limit of the decode kernels (the GPU keeps taps and state in registers)

struct SsmStepParams {
  int64_t B = 0, D = 0, N = 0, R = 0;
  DType dtype = DType::F32;
  void* u = nullptr;        // read; written in row mode with a conv
  const void* z = nullptr;  // optional
  int64_t ld = 0;
  const void* xproj = nullptr;  // partials mode: [P, B, R + 2N]
  int64_t P = 1;
  const void* x_proj_w = nullptr;  // row mode: [R + 2N, D]
  // CUDA row mode, optional: [B, R + 2N] compute-dtype scratch. Given, the step runs as three kernels that fill the
  // GPU at any batch (the conv step, x_proj as one GEMM into xrow, the state update); else as one block per row.
  void* xrow = nullptr;
  const void* conv_w = nullptr;  // row mode, optional: [D, K]
  const void* conv_b = nullptr;  // [D] or nullptr
  void* conv_state = nullptr;    // [B, K-1, D]
  int64_t K = 0;
  const void* dt_w = nullptr;     // [D, R]
  const void* dt_bias = nullptr;  // [D] optional
  const void* A = nullptr;        // [D, N]
  const void* D_skip = nullptr;   // [D] optional
  void* state = nullptr;          // [B, D, N]
  void* y = nullptr;              // [B, D]
  bool pdl = false;               // CUDA only (kernels/cuda/decode_launch.cuh)
  L2Prefetch prefetch;            // CUDA only: issued by the update kernel before its wait
};

// mt::Error(Shape) for a conv width outside [1, kConvMaxK]; mt::Error(Internal) for bad sizes or missing buffers.
void ssm_step_check(const SsmStepParams& p);
void ssm_step_cpu(const SsmStepParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void ssm_step_cuda(const SsmStepParams& p);

}  // namespace mt::kernels
