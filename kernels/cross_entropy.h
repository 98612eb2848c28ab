// Row-wise log-softmax and the fused cross-entropy loss (R rows, N samples, C classes / vocab).
//
// log_softmax over the last dim of a contiguous [R, C] matrix:
//   lse_r = m_r + log sum_c exp(x_rc - m_r),  m_r = max_c x_rc        y_rc = x_rc - lse_r
//   backward: dx_rc = dy_rc - exp(y_rc) * sum_c dy_rc
//
// cross-entropy of logits [N, C] against targets t [N] (i32 / i64), ignore_index skipped:
//   valid_i = (t_i != ignore_index),  count = sum_i valid_i
//   loss = (1 / count) * sum_{i valid} (lse_i - x_{i, t_i})            (0 when count == 0)
//   backward (upstream g, a scalar): dx_ic = valid_i * (exp(x_ic - lse_i) - [c == t_i]) * g / count
// The forward saves lse [N] (compute dtype) and count, so the backward reads the logits once and writes the [N, C]
// gradient once; nothing else of size N x C is materialised.
//
// Compute dtype: f32 for f32 / bf16 / f16 inputs (CPU: bf16 / f16 come converted to f32), f64 for f64.
// CUDA: one block per row with an online (max, sum) pass, then a fixed-order single-block reduction of the per-row
// losses (deterministic). Works for any C >= 1 (tested with C = 1 and C = 50280).
// Bad targets (outside [0, C), not ignore_index): the CPU forward returns the first bad row before computing; the
// CUDA forward atomicMin's the row into bad_row (initialised to N by the caller), which the op reads back.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/ignore_index.h"

namespace mt::kernels {

struct LogSoftmaxParams {
  DType dtype = DType::F32;  // x, y, dy, dx dtype
  int64_t R = 0, C = 0;
  const void* x = nullptr;   // forward input [R, C]
  void* y = nullptr;         // forward output [R, C]
  const void* dy = nullptr;  // backward: upstream gradient [R, C]
  void* dx = nullptr;        // backward: input gradient [R, C]
};

void log_softmax_fwd_cpu(const LogSoftmaxParams& p);  // x -> y
void log_softmax_bwd_cpu(const LogSoftmaxParams& p);  // (y, dy) -> dx

struct CrossEntropyParams {
  DType dtype = DType::F32;         // logits dtype
  DType target_dtype = DType::I64;  // I32 or I64
  int64_t N = 0, C = 0;
  int64_t ignore_index = kIgnoreIndex;
  const void* logits = nullptr;     // [N, C] contiguous
  const void* targets = nullptr;    // [N] contiguous
  void* lse = nullptr;              // [N] compute dtype (forward writes, backward reads)
  void* count = nullptr;            // [] compute dtype (forward writes, backward reads)
  void* loss = nullptr;             // [] compute dtype (forward writes)
  void* row_loss = nullptr;         // CUDA forward scratch: [N] compute dtype
  int64_t* bad_row = nullptr;       // CUDA forward: device int64 = N on entry, min bad row on exit
  const void* grad_loss = nullptr;  // backward: upstream scalar gradient (compute dtype, device memory on CUDA)
  void* grad_logits = nullptr;      // backward: [N, C] in the logits dtype
};

// Returns the first row whose target is out of range (then nothing is computed), or -1.
int64_t cross_entropy_fwd_cpu(const CrossEntropyParams& p);
void cross_entropy_bwd_cpu(const CrossEntropyParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void log_softmax_fwd_cuda(const LogSoftmaxParams& p);
void log_softmax_bwd_cuda(const LogSoftmaxParams& p);
void cross_entropy_fwd_cuda(const CrossEntropyParams& p);
void cross_entropy_bwd_cuda(const CrossEntropyParams& p);

}  // namespace mt::kernels
