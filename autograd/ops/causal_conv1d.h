// Depthwise causal conv1d, token-major (the Mamba block's short convolution before the SiLU).
#pragma once

#include "core/tensor.h"

namespace mt {

struct CausalConv1dOut {
  Tensor y;            // [B, L, D], x's dtype
  Tensor final_state;  // [B, K-1, D], x's dtype: the last K-1 rows of concat(initial_state, x) along time (not reverse)
};

// x [B, L, D]; weight [D, K] (callers reshape HF's [D, 1, K]); bias [D] (optional: undefined Tensor());
// initial_state [B, K-1, D] (optional: the K-1 inputs before x[:, 0]; zeros if undefined).
//   y[b, t, d] = bias[d] + sum_{k<K} weight[d, k] * xx[b, t + k, d],   xx = concat(initial_state, x) along time,
// so weight[d, K-1] multiplies the current input (PyTorch Conv1d(groups=D, padding=K-1) truncated to the first L
// outputs). apply_silu fuses y = silu(y). Running x in chunks and passing each chunk's final_state as the next
// chunk's initial_state gives the same y as one run (streaming / step-by-step decoding).
// Dtypes: x, initial_state, y, final_state share x's dtype (any float); weight and bias share one dtype, x's or f32.
// Math accumulates in f32 (f64 for f64 x). Differentiable in x, weight, bias and initial_state through both
// outputs; gradients have their input's dtype.
// reset [B, L] i32 (optional, not differentiable): nonzero where a document starts; an output sees only inputs of
// its own document, and final_state only rows no later document start follows (kernels/causal_conv1d.h).
// reverse: the conv of the sequence flipped in time (output t reads x at t .. t+K-1), every input and output in its
// own order, with no flipped copies; a reset at t then ends a document read backwards. It takes no initial_state and
// gives no final_state (undefined). Equals flip(conv(flip(x))) bit for bit on the CPU.
CausalConv1dOut causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& initial_state,
                              bool apply_silu, const Tensor& reset = Tensor(), bool reverse = false);

}  // namespace mt
