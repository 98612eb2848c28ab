// Differentiable selective scan (Mamba-1 SSM), token-major. Math: kernels/selective_scan.h.
//
//   u, delta, z: [B, L, D]; Bm, Cm: [B, L, N]; A: [D, N]; D_skip, delta_bias: [D]; initial_state: [B, D, N];
//   mask: [B, L] (any dtype, nonzero = real token).
//   delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias (bias optional)
//   h_t = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t   (per channel d, state n; h_{-1} = initial_state or 0)
//   y_t = <C_t, h_t> + D_skip * u_t ; y_t *= silu(z_t) if z given.
//   Masked positions (mask == 0): h_t = h_{t-1} (state unchanged) and y_t = 0.
//   reset [B, L] i32 (optional, not differentiable): nonzero where a document starts; the state entering that step
//   is zero (the initial state too at t = 0), so each document is scanned as if alone.
//   last_state = h_{L-1} [B, D, N] (always returned).
//   reverse: the scan of the sequence flipped in time (h runs t = L-1 .. 0; last_state is the state after t = 0),
//   every input and output in its own order, with no flipped copies; a reset at t then ends a document read backwards
//   (the state is zeroed before t-1). Equals flip(scan(flip(inputs))) bit for bit on the CPU.
//
// D_skip, z, delta_bias, initial_state, mask and reset may be undefined (absent).
// dtypes: u, delta, z, Bm, Cm share one storage dtype (f32, f64, bf16, f16); A, D_skip, delta_bias, initial_state
// are f32, or all f64 when the inputs are f64. y has u's dtype; last_state is f32 (f64 for f64 inputs). The state
// and all accumulation are f32 (f64). On CUDA N <= 64.
//
// Both outputs are differentiable: the gradient reaching last_state flows into the backward recurrence, so a long
// sequence can be trained in chunks with the state carried from one call to the next (initial_state = the
// previous call's last_state). The backward recomputes the states from the saved inputs (O(B*L*D*N) is never
// stored). On CUDA, dA, dBm, dCm, dD_skip and ddelta_bias are per-block partial sums reduced in a fixed order, no
// atomics: the gradients are bitwise reproducible run to run.
#pragma once

#include "core/tensor.h"

namespace mt {

struct SelectiveScanOut {
  Tensor y;
  Tensor last_state;
};

SelectiveScanOut selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias,
                                bool delta_softplus, const Tensor& initial_state = Tensor(),
                                const Tensor& mask = Tensor(), const Tensor& reset = Tensor(), bool reverse = false);

}  // namespace mt
