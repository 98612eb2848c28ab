// The model's part of one decode step for a few rows (the batches that take the GEMV kernels): every layer (residual
// add + norm, in_proj, conv step, x_proj, dt_proj, state update, gate, out_proj) and the final norm + LM head, i.e.
// for each layer l
//   decode_gemv MixerIn (in_proj)  ->  ssm_step (partials mode)  ->  decode_gemv Store (out_proj)
// then decode_gemv Store (norm_f + LM head, logits in the compute dtype; the last call only), with the parameters that
// decode_step_in_proj / _ssm / _out_proj / _lm_head below build, so that the step is exactly those calls in that
// order (math in kernels/decode_gemv.h and kernels/ssm_step.h). The first layer reads the embedding rows of `tokens`
// and adds 1 to `step_counter`. The residual stream alternates between res[0] (even layers write it) and res[1].
//
// CUDA, persistent (the default where it fits): one cooperative kernel runs the whole list as phases separated by
// grid-wide barriers, each block taking the phase's blocks of the separate kernels in turn and loading its weights
// before the barrier, as the separate kernels do before their PDL wait. The arithmetic of every output is that of the
// separate kernels, so both give the same bits. persistent = false launches the separate kernels.
//
// Dtypes and sizes as in decode_gemv.h / ssm_step.h; CUDA: B <= kDecodeStepMaxBatch and decode_gemv_cuda_supports.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/decode_gemv.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

constexpr int64_t kDecodeStepMaxLayers = 64;
constexpr int64_t kDecodeStepMaxBatch = 2;  // the persistent kernel's row limit

struct DecodeStepLayer {
  const void* norm_w = nullptr;  // [d_model] compute dtype (f32; f64 for f64)
  const void* norm_b = nullptr;  // [d_model] (LayerNorm) or nullptr
  const void* in_w = nullptr;    // [2 d_inner, d_model]
  const void* in_b = nullptr;    // [2 d_inner] or nullptr
  const void* conv_w = nullptr;  // [d_inner, K]
  const void* conv_b = nullptr;  // [d_inner] or nullptr
  void* conv_state = nullptr;    // [B, K-1, d_inner]
  const void* x_w = nullptr;     // [R + 2N, d_inner]
  const void* dt_w = nullptr;    // [d_inner, R]
  const void* dt_b = nullptr;    // [d_inner] compute dtype
  const void* A = nullptr;       // [d_inner, N] compute dtype
  const void* D = nullptr;       // [d_inner] compute dtype
  const void* out_w = nullptr;   // [d_model, d_inner]
  const void* out_b = nullptr;   // [d_model] or nullptr
  void* ssm_state = nullptr;     // [B, d_inner, N] compute dtype
};

struct DecodeStepParams {
  int64_t B = 0, V = 0, d_model = 0, d_inner = 0, N = 0, R = 0, K = 0;
  DType dtype = DType::F32;
  bool rms = true;
  double eps = 1e-5;
  bool round_residual = false;
  // The layers of this call: the model's layers first .. first + n_layer - 1 (models with more than
  // kDecodeStepMaxLayers layers take several calls). The call with first = 0 starts from the embedding; the one with
  // last runs the LM head after its layers.
  int64_t n_layer = 0, first = 0;
  bool last = true;
  DecodeStepLayer layers[kDecodeStepMaxLayers];
  const void* embedding = nullptr;  // [V, d_model]
  const int64_t* tokens = nullptr;  // [B]
  int64_t* step_counter = nullptr;  // optional
  const void* norm_f_w = nullptr;   // [d_model] compute dtype
  const void* norm_f_b = nullptr;   // or nullptr
  const void* lm_head = nullptr;    // [V, d_model]
  // Work buffers: h [B, d_model], res[2] [B, d_model] compute dtype, xz [B, 2 d_inner], xproj
  // [decode_xproj_partials(d_inner), B, R + 2N] compute dtype, y [B, d_inner]; logits [B, V] compute dtype.
  void* h = nullptr;
  void* res[2] = {nullptr, nullptr};
  void* xz = nullptr;
  void* xproj = nullptr;
  void* y = nullptr;
  void* logits = nullptr;
  bool persistent = true;  // CUDA only
  bool pdl = false;        // CUDA, separate kernels: programmatic dependent launch between them
  // CUDA persistent: one zeroed 32-bit counter the grid's barriers count on; decode_step_cuda zeroes it first.
  unsigned* barrier = nullptr;
};

// The parameters of each call of the step (see above).
MT_HD int64_t decode_step_elem(DType t) { return t == DType::F64 ? 8 : t == DType::F32 ? 4 : 2; }  // float dtypes

MT_HD DecodeNormArgs decode_step_norm(const DecodeStepParams& p, const void* w, const void* b) {
  DecodeNormArgs a;
  a.weight = w;
  a.bias = b;
  a.rms = p.rms;
  a.eps = p.eps;
  a.round_residual = p.round_residual;
  return a;
}

MT_HD DecodeGemvParams decode_step_in_proj(const DecodeStepParams& p, int64_t l) {
  const DecodeStepLayer& L = p.layers[l];
  const int64_t lg = p.first + l;  // the layer's index in the model
  DecodeGemvParams g;
  g.B = p.B;
  g.dtype = p.dtype;
  g.pdl = p.pdl;
  g.in = p.d_model;
  g.out = 2 * p.d_inner;
  g.W = L.in_w;
  g.bias = L.in_b;
  g.norm = decode_step_norm(p, L.norm_w, L.norm_b);
  if (lg == 0) {
    g.input = DecodeInput::EmbedNorm;
    g.norm.embedding = p.embedding;
    g.norm.tokens = p.tokens;
    g.norm.step_counter = p.step_counter;
  } else {
    g.input = DecodeInput::Norm;
    g.norm.h = p.h;
    g.norm.residual_in = p.res[(lg - 1) % 2];
  }
  g.norm.residual_out = p.res[lg % 2];
  g.output = DecodeOutput::MixerIn;
  g.y = p.xz;
  g.d_inner = p.d_inner;
  g.K = p.K;
  g.E = p.R + 2 * p.N;
  g.conv_w = L.conv_w;
  g.conv_b = L.conv_b;
  g.conv_state = L.conv_state;
  g.x_proj_w = L.x_w;
  g.xproj = p.xproj;
  return g;
}

MT_HD SsmStepParams decode_step_ssm(const DecodeStepParams& p, int64_t l) {
  const DecodeStepLayer& L = p.layers[l];
  SsmStepParams s;
  s.B = p.B;
  s.D = p.d_inner;
  s.N = p.N;
  s.R = p.R;
  s.dtype = p.dtype;
  s.u = p.xz;
  s.z = static_cast<const char*>(p.xz) + p.d_inner * decode_step_elem(p.dtype);
  s.ld = 2 * p.d_inner;
  s.xproj = p.xproj;
  s.P = decode_xproj_partials(p.d_inner);
  s.dt_w = L.dt_w;
  s.dt_bias = L.dt_b;
  s.A = L.A;
  s.D_skip = L.D;
  s.state = L.ssm_state;
  s.y = p.y;
  s.pdl = p.pdl;
  return s;
}

MT_HD DecodeGemvParams decode_step_out_proj(const DecodeStepParams& p, int64_t l) {
  const DecodeStepLayer& L = p.layers[l];
  DecodeGemvParams g;
  g.B = p.B;
  g.dtype = p.dtype;
  g.pdl = p.pdl;
  g.in = p.d_inner;
  g.out = p.d_model;
  g.W = L.out_w;
  g.bias = L.out_b;
  g.input = DecodeInput::Plain;
  g.x = p.y;
  g.output = DecodeOutput::Store;
  g.y = p.h;
  return g;
}

MT_HD DecodeGemvParams decode_step_lm_head(const DecodeStepParams& p) {
  DecodeGemvParams g;
  g.B = p.B;
  g.dtype = p.dtype;
  g.pdl = p.pdl;
  g.in = p.d_model;
  g.out = p.V;
  g.W = p.lm_head;
  g.input = DecodeInput::Norm;
  g.norm = decode_step_norm(p, p.norm_f_w, p.norm_f_b);
  g.norm.h = p.h;
  g.norm.residual_in = p.res[(p.first + p.n_layer - 1) % 2];
  g.output = DecodeOutput::Store;
  g.y = p.logits;
  g.y_compute = true;
  return g;
}

// mt::Error(Shape) for more than kDecodeStepMaxLayers layers; mt::Error(Internal) for bad sizes or missing buffers.
void decode_step_check(const DecodeStepParams& p);
void decode_step_cpu(const DecodeStepParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// Whether the persistent kernel takes these sizes on this GPU (else decode_step_cuda launches the separate kernels).
bool decode_step_cuda_persistent_supports(const DecodeStepParams& p);
void decode_step_cuda(const DecodeStepParams& p);

}  // namespace mt::kernels
