// RMSNorm / LayerNorm over the last dimension, with the pre-norm block's fused residual add.
//
// Rows: the input viewed as [R, H] (R = product of leading dims, H = normalised size).
//   r[i, :]  = x[i, :] + residual[i, :]            (residual optional; r is the f32 residual stream, written to
//                                                    residual_out when asked; the plain norm uses r = x)
//   rms:   rstd_i = 1 / sqrt(mean_c r[i, c]^2 + eps),            n = r * rstd_i,            y = n * weight
//   layer: mean_i = mean_c r[i, c], var_i = mean_c (r - mean_i)^2 (biased), rstd_i = 1 / sqrt(var_i + eps),
//          n = (r - mean_i) * rstd_i,                                                        y = n * weight + bias
// Backward, with gn = dy * weight (mean_i taken as 0 for rms):
//   dr = rstd_i * (gn - [layer] mean_c(gn) - n * mean_c(gn * n)) + d_residual_out
//   dx = dr (x's dtype), d_residual = dr (residual's dtype), dweight = sum_i dy * n, dbias = sum_i dy.
//
// Dtypes: the compute dtype (statistics, mean / rstd buffers) is F64 when x (forward) or r (backward) is F64,
// else F32. residual / residual_out are in the compute dtype (the fp32 residual stream). x, y, dy, dx may be any
// float dtype; weight / bias / dweight / dbias share w_dtype (F32 or F64). CPU kernels need every buffer in the
// compute dtype (the autograd op converts); CUDA kernels take the dtypes as given. All buffers contiguous
// [R, H] / [H] / [R]; optional ones are nullptr when absent.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct NormFwdParams {
  int64_t rows = 0, H = 0;
  bool rms = true;  // false: LayerNorm
  double eps = 1e-5;
  const void* x = nullptr;
  DType x_dtype = DType::F32;
  const void* residual = nullptr;  // compute dtype, or nullptr
  const void* weight = nullptr;
  const void* bias = nullptr;  // LayerNorm only, or nullptr
  DType w_dtype = DType::F32;
  void* y = nullptr;
  DType y_dtype = DType::F32;
  void* residual_out = nullptr;  // r in the compute dtype, or nullptr
  void* mean = nullptr;          // [rows] compute dtype (LayerNorm), or nullptr
  void* rstd = nullptr;          // [rows] compute dtype, or nullptr
};

struct NormBwdParams {
  int64_t rows = 0, H = 0;
  bool rms = true;
  const void* r = nullptr;  // the normalised input (residual_out, or x for the plain norm)
  DType r_dtype = DType::F32;
  const void* mean = nullptr;  // [rows] compute dtype; LayerNorm only
  const void* rstd = nullptr;  // [rows] compute dtype
  const void* weight = nullptr;
  DType w_dtype = DType::F32;
  const void* dy = nullptr;
  DType dy_dtype = DType::F32;
  const void* d_residual_out = nullptr;  // compute dtype, or nullptr (zero)
  void* dx = nullptr;                    // or nullptr
  DType dx_dtype = DType::F32;
  void* d_residual = nullptr;  // compute dtype, or nullptr
  void* dweight = nullptr;     // w_dtype, or nullptr
  void* dbias = nullptr;       // w_dtype, or nullptr
};

void norm_fwd_cpu(const NormFwdParams& p);
void norm_bwd_cpu(const NormBwdParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// One warp per row; dweight / dbias by a column-tiled partial-sum kernel reduced in a fixed order (deterministic).
void norm_fwd_cuda(const NormFwdParams& p);
void norm_bwd_cuda(const NormBwdParams& p);

}  // namespace mt::kernels
