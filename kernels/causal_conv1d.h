// Depthwise causal conv1d over time, token-major layout (the Mamba block's short convolution).
//
// Shapes: x [B, L, D], weight [D, K], bias [D] (optional), initial_state [B, K-1, D] (optional: the K-1 inputs that
// precede x[:, 0]; zeros when absent). Let xx = concat(initial_state, x) along time, length L + K - 1, so
// xx[b, s, d] = initial_state[b, s, d] for s < K-1 and x[b, s-(K-1), d] otherwise. Then
//   pre[b, t, d]  = bias[d] + sum_{k<K} weight[d, k] * xx[b, t + k, d]        (t < L)
//   y[b, t, d]    = silu(pre) if silu else pre
//   final_state[b, j, d] = xx[b, L + j, d]                                     (j < K-1: the last K-1 rows of xx)
// weight[d, K-1] multiplies the current input: this is PyTorch's Conv1d(groups=D, padding=K-1) cut to L outputs.
// final_state is what the next chunk (or decode step) passes as initial_state, so chunked runs equal one long run.
//
// Backward, with g_pre = dy * silu'(pre) (silu'(p) = s (1 + p (1 - s)), s = sigmoid(p)) or dy:
//   dxx[b, s, d]  = sum_{k<K, 0<=s-k<L} weight[d, k] * g_pre[b, s-k, d]  +  (s >= L ? d_final[b, s-L, d] : 0)
//   dx[b, t, d]   = dxx[b, t + K-1, d],   d_initial_state[b, j, d] = dxx[b, j, d]
//   dweight[d, k] = sum_{b,t} g_pre[b, t, d] * xx[b, t + k, d],   dbias[d] = sum_{b,t} g_pre[b, t, d]
//
// Document resets (reset [B, L] i32, optional; nonzero where a document starts): output t sees an input only from
// its own document, so tap k of output t (input time tau = t - (K-1-k), negative times in initial_state) counts only
// when no reset lies in (tau, t]; and final_state row j (time L - (K-1) + j) is zero when a reset lies after it
// (in (tau, L-1]), so the next chunk does not see it either. The backward differentiates exactly that (a masked tap
// passes no gradient to its input or weight). Without reset every tap counts, as above.
//
// Reverse conv (reverse = true): the conv of the sequence flipped in time, every input and output left in its own
// order (no flipped copies): output t reads x at t, t+1, .., t+K-1 (weight[d, K-1] the current one). Resets keep
// their meaning for the flipped sequence (a document that starts at t ends there read backwards). It takes no
// initial or final state.
//
// Dtypes: `dtype` is that of x, initial_state, y, final_state, dy, d_final, dx, d_initial_state; `w_dtype` that of
// weight, bias, dweight, dbias (equal to dtype, or F32). Math runs in f32 (f64 when dtype is F64).
// CPU kernels take F32 / F64 only and need dtype == w_dtype (the autograd op converts); CUDA takes any float dtype
// with w_dtype == dtype or F32. All buffers are contiguous; optional ones are nullptr when absent.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct CausalConv1dFwdParams {
  int64_t B = 0, L = 0, D = 0, K = 0;
  DType dtype = DType::F32;
  DType w_dtype = DType::F32;
  bool silu = false;
  const void* x = nullptr;              // [B, L, D]
  const void* weight = nullptr;         // [D, K]
  const void* bias = nullptr;           // [D] or nullptr
  const void* initial_state = nullptr;  // [B, K-1, D] or nullptr (zeros)
  const int32_t* reset = nullptr;       // [B, L] or nullptr (no document starts)
  bool reverse = false;                 // see below
  void* y = nullptr;                    // [B, L, D]
  void* final_state = nullptr;          // [B, K-1, D] or nullptr (not written)
};

struct CausalConv1dBwdParams {
  int64_t B = 0, L = 0, D = 0, K = 0;
  DType dtype = DType::F32;
  DType w_dtype = DType::F32;
  bool silu = false;
  // forward inputs (pre is recomputed: nothing but the inputs is saved)
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const void* initial_state = nullptr;
  const int32_t* reset = nullptr;
  bool reverse = false;
  // upstream gradients
  const void* dy = nullptr;       // [B, L, D]
  const void* d_final = nullptr;  // [B, K-1, D] or nullptr (zero)
  // outputs, each nullptr when not wanted; every wanted one is fully overwritten
  void* dx = nullptr;               // [B, L, D]
  void* d_initial_state = nullptr;  // [B, K-1, D]
  void* dweight = nullptr;          // [D, K]
  void* dbias = nullptr;            // [D]
};

void causal_conv1d_fwd_cpu(const CausalConv1dFwdParams& p);
void causal_conv1d_bwd_cpu(const CausalConv1dBwdParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void causal_conv1d_fwd_cuda(const CausalConv1dFwdParams& p);
// Deterministic: dweight / dbias are per-tile partial sums reduced in a fixed order (no atomics).
void causal_conv1d_bwd_cuda(const CausalConv1dBwdParams& p);

}  // namespace mt::kernels
