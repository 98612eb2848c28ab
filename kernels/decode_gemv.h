// The projections of a single-token decode step: a matrix-vector product for a few rows, with the residual add +
// norm in front and the conv step + x_proj partial products behind it fused in, so that a Mamba layer's decode step
// is three kernels (decode_gemv for in_proj, ssm_step, decode_gemv for out_proj).
//
// Input (DecodeInput), rows b < B of width `in`:
//   Plain:      xin[b] = x[b]                                         (x [B, in] in dtype)
//   Norm:       r = h[b] + residual_in[b] (residual_in optional), xin[b] = round(norm(r))
//   EmbedNorm:  r = embedding[tokens[b]], xin[b] = round(norm(r))     (the first layer: the residual stream starts
//                                                                     at the embedding)
//   norm: RMSNorm r * rstd * w, rstd = 1 / sqrt(mean(r^2) + eps), or LayerNorm (r - mean) * rstd * w + bias with
//   rstd from the biased variance (kernels/norm.h). residual_out[b] = r (rounded to dtype when round_residual:
//   residual_in_fp32 false), written when given. EmbedNorm with a step counter adds 1 to it.
// Product: acc[b, o] = sum_i W[o, i] * xin[b, i] + bias[o] (bias optional), accumulated in f32 (f64 for f64).
// Output (DecodeOutput):
//   Store:      y[b, o] = acc (in dtype, or in the compute dtype with y_compute: the logits)
//   MixerIn:    out = 2 * d_inner (in_proj's x and z halves). o < d_inner: x = round(acc), then the conv step of
//               channel o (as in ssm_step's row mode: kernels/detail/decode_math.h conv_pre, conv_state [B, K-1,
//               d_inner] shifted) gives u = round(silu(conv)) and y[b, o] = u; o >= d_inner: y[b, o] = round(acc)
//               (z). Then x_proj's partial products over channel groups of
//               kDecodeGemvRows: xproj[p, b, e] = sum_{c in [16p, 16p + 16) and c < d_inner} x_proj_w[e, c] * u[b, c]
//               for p < ceil(d_inner / 16), e < E (ssm_step sums them).
// round() stores a value in dtype and reads it back, where the parallel model stores that activation.
//
// decode_norm is the input stage alone (y = xin [B, H] in dtype), for batches that take the cuBLAS path.
//
// Dtypes: W, x, h, embedding, bias, conv_w, conv_b, conv_state, x_proj_w and y share `dtype` (any float dtype);
// residual_in / residual_out, the norm weights and xproj are in the compute dtype (f64 for f64, else f32).
// Conv width 1 <= K <= kConvMaxK (kernels/ssm_step.h). CUDA: B <= kDecodeGemvMaxBatch, `in` a multiple of 8
// (16-byte loads), f32, bf16 or f16, and a block's tile within shared memory (decode_gemv_cuda_supports).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

enum class DecodeInput : uint8_t { Plain, Norm, EmbedNorm };
enum class DecodeOutput : uint8_t { Store, MixerIn };

// Output rows per CUDA block, and the channel group of the x_proj partial sums (both backends).
constexpr int64_t kDecodeGemvRows = 16;
constexpr int64_t kDecodeGemvMaxBatch = 8;

struct DecodeNormArgs {
  const void* h = nullptr;            // Norm: [B, H]
  const void* embedding = nullptr;    // EmbedNorm: [V, H]
  const int64_t* tokens = nullptr;    // EmbedNorm: [B], each in [0, V)
  int64_t* step_counter = nullptr;    // EmbedNorm, optional: incremented once
  const void* residual_in = nullptr;  // Norm, optional: [B, H]
  void* residual_out = nullptr;       // optional: [B, H]
  bool round_residual = false;
  const void* weight = nullptr;  // [H]
  const void* bias = nullptr;    // [H] (LayerNorm) or nullptr
  bool rms = true;
  double eps = 1e-5;
};

struct DecodeNormParams {
  int64_t B = 0, H = 0;
  DType dtype = DType::F32;
  DecodeInput input = DecodeInput::Norm;  // Norm or EmbedNorm
  DecodeNormArgs norm;
  void* y = nullptr;  // [B, H]
  bool pdl = false;   // CUDA only (kernels/cuda/decode_launch.cuh)
};

struct DecodeGemvParams {
  int64_t B = 0, in = 0, out = 0;
  DType dtype = DType::F32;
  const void* W = nullptr;     // [out, in]
  const void* bias = nullptr;  // [out] or nullptr
  DecodeInput input = DecodeInput::Plain;
  const void* x = nullptr;  // Plain: [B, in]
  DecodeNormArgs norm;      // Norm / EmbedNorm (H = in)
  DecodeOutput output = DecodeOutput::Store;
  void* y = nullptr;  // [B, out]
  bool y_compute = false;
  // MixerIn (out == 2 * d_inner)
  int64_t d_inner = 0, K = 0, E = 0;
  const void* conv_w = nullptr;    // [d_inner, K]
  const void* conv_b = nullptr;    // [d_inner] or nullptr
  void* conv_state = nullptr;      // [B, K-1, d_inner]
  const void* x_proj_w = nullptr;  // [E, d_inner]
  void* xproj = nullptr;           // [ceil(d_inner / kDecodeGemvRows), B, E]
  bool pdl = false;                // CUDA only
};

// Number of x_proj partials MixerIn writes.
inline int64_t decode_xproj_partials(int64_t d_inner) { return (d_inner + kDecodeGemvRows - 1) / kDecodeGemvRows; }

void decode_gemv_cpu(const DecodeGemvParams& p);
void decode_norm_cpu(const DecodeNormParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// Shapes the CUDA kernels take (see above); decode_gemv_cuda throws mt::Error(Shape) for others.
// E: x_proj's width for MixerIn calls (0 otherwise); the block's weight rows, input rows and x_proj columns must fit in
// shared memory.
bool decode_gemv_cuda_supports(int64_t B, int64_t in, int64_t K, int64_t E, DType dtype);
void decode_gemv_cuda(const DecodeGemvParams& p);
void decode_norm_cuda(const DecodeNormParams& p);
// An empty kernel of `blocks` blocks in the decode step's chain: it waits for the previous kernel (PDL) and lets the
// next one launch, nothing else. bench decode --empty-kernels adds such kernels to measure what a boundary costs.
void decode_empty_cuda(int64_t blocks, bool pdl);

}  // namespace mt::kernels
