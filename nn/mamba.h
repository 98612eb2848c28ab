// The Mamba-1 encoder (docs/DESIGN.md "The Mamba-1 block"), on the tape.
//
//   MambaBackbone: embeddings -> n_layer x MambaBlock -> norm_f
//   MambaBlock (pre-norm, fused residual): residual = h + residual (fp32); h = Norm(residual); h = mixer(h)
//   MambaMixer: x, z = in_proj(h) (one GEMM per half); x = silu(causal_conv1d(x)); [dt | B | C] = x_proj(x);
//               delta = dt_proj.weight @ dt; y = selective_scan(x, delta, -exp(A_log), B, C, D, z,
//               dt_proj.bias, softplus); out = out_proj(y)
// Activations are [B, L, d] (token-major) throughout, so no transposes sit between the GEMMs and the scan.
#pragma once

#include <memory>
#include <vector>

#include "autograd/ops/selective_scan_bidir.h"
#include "core/rng.h"
#include "nn/config.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace mt::nn {

// Per-layer recurrent state for step-by-step (streaming) use: the conv's last K-1 inputs and the SSM state.
struct LayerState {
  Tensor conv_state;  // [B, K-1, d_inner] in the compute dtype
  Tensor ssm_state;   // [B, d_inner, N] f32 (f64 in an f64 model)
};
struct InferenceCache {
  std::vector<LayerState> layers;
  int64_t position = 0;  // tokens consumed so far
};

struct ForwardOptions {
  DType compute_dtype = DType::F32;  // activation / GEMM operand dtype (f32, bf16, f16; f64 for checks)
  Tensor mask;                       // [B, L], nonzero = real token (optional)
  // [B, L] i32, nonzero where a document starts (optional; data.reset_at_document_end): every layer's conv and SSM
  // state is reset there, so each document of a packed window is encoded as if alone. Unidirectional layers read it
  // as is; a reverse direction reads the document starts of the reversed sequence (nn/mamba.cpp).
  Tensor reset;
  bool output_hidden_states = false;
  InferenceCache* cache = nullptr;  // when set: start from and update these states (streaming)
  // Activation checkpointing (trainer.activation_checkpointing: block): each block keeps only its inputs for the
  // backward and recomputes its activations there (autograd/checkpoint.h). Same gradients, bit for bit.
  bool checkpoint_blocks = false;
  // Training-time dropout (inverted: autograd/ops/elementwise.h), masks drawn from *dropout_gen: `dropout` on each
  // block's mixer output before it joins the residual stream, `classifier_dropout` on a classifier's input (the
  // pooled features, or each token's hidden state). Off without a generator (evaluation, inference).
  Generator* dropout_gen = nullptr;
  double dropout = 0.0;
  double classifier_dropout = 0.0;
};

// The per-direction weights of a Caduceus bidirectional layer's reverse direction (submodule "reverse" of the
// mixer: mixer.reverse.conv1d.weight, .x_proj.weight, .dt_proj.weight / .bias, .A_log, .D); in_proj and out_proj are
// the forward direction's.
class MixerReverse : public Module {
 public:
  explicit MixerReverse(const MambaConfig& cfg);
  CausalConv1d conv1d;
  Linear x_proj;
  Linear dt_proj;
  Tensor* A_log;
  Tensor* D;
};

class MambaMixer : public Module {
 public:
  MambaMixer(const MambaConfig& cfg);
  // h [B, L, d_model] in the compute dtype -> [B, L, d_model]. last_state (optional out): the forward scan's
  // final SSM state [B, d_inner, N]. state (optional in/out): streaming conv + SSM state.
  Tensor forward(const Tensor& h, const ForwardOptions& opt, LayerState* state, Tensor* last_state) const;
  void init_parameters(Generator& gen, int64_t n_layer);

  Linear in_proj;                         // [2*d_inner, d_model]: x and z halves
  CausalConv1d conv1d;                    // depthwise over d_inner channels, kernel d_conv
  Linear x_proj;                          // [dt_rank + 2N, d_inner]: dt | B | C
  Linear dt_proj;                         // [d_inner, dt_rank]; its bias is applied in fp32 inside the scan
  Tensor* A_log;                          // [d_inner, N] fp32, A = -exp(A_log)
  Tensor* D;                              // [d_inner] fp32 skip
  Linear out_proj;                        // [d_model, d_inner]
  std::unique_ptr<MixerReverse> reverse;  // bidirectional, Caduceus weights only

 private:
  // The mixer (in_proj to out_proj): one direction, or with Caduceus weights both. backwards: the shared-weights
  // variant's second pass, which reads the sequence backwards in place (the conv and the scan run reversed).
  Tensor run(const Tensor& h, const Tensor& mask, const Tensor& reset, DType cd, LayerState* state, Tensor* last_state,
             bool backwards = false) const;
  // The per-direction part: conv + SiLU, x_proj, dt_proj and the scan on x [B, L, d_inner] (masked) and z; returns
  // the scan output y [B, L, d_inner] (before out_proj). backwards: the conv and the scan read the sequence backwards,
  // in place (no flipped copies); y is in the input's order.
  Tensor direction(const CausalConv1d& conv, const Linear& xp, const Linear& dtp, const Tensor& A_log_p,
                   const Tensor& D_p, const Tensor& x, const Tensor& z, const Tensor& mask, const Tensor& reset,
                   DType cd, LayerState* state, Tensor* last_state, bool backwards = false) const;
  // direction's inputs of the scan: conv + SiLU, x_proj, dt_proj; the conv state of `state` advances.
  ScanDirection scan_inputs(const CausalConv1d& conv, const Linear& xp, const Linear& dtp, const Tensor& A_log_p,
                            const Tensor& D_p, const Tensor& x, const Tensor& reset, DType cd, LayerState* state,
                            bool backwards) const;
  MambaConfig cfg_;
};

class MambaBlock : public Module {
 public:
  explicit MambaBlock(const MambaConfig& cfg);
  // Returns (mixer output, residual). residual may be undefined for the first block.
  std::pair<Tensor, Tensor> forward(const Tensor& h, const Tensor& residual, const ForwardOptions& opt,
                                    LayerState* state, Tensor* last_state) const;
  Norm norm;
  MambaMixer mixer;

 private:
  MambaConfig cfg_;
};

struct BackboneOutput {
  Tensor last_hidden_state;           // [B, L, d_model] after norm_f, compute dtype
  std::vector<Tensor> hidden_states;  // with output_hidden_states: embeddings, each block's output (residual
                                      // stream, as HF returns), then the normed final state
  Tensor last_ssm_state;              // last layer's final SSM state [B, d_inner, N]
};

class MambaBackbone : public Module {
 public:
  explicit MambaBackbone(const MambaConfig& cfg);
  // With cfg.rc_equivariant, last_hidden_state is [B, L, 2 d_model] (nn/config.h) and the hidden states and final
  // SSM state are not returned.
  BackboneOutput forward(const Tensor& ids, const ForwardOptions& opt) const;
  void init_parameters(Generator& gen);
  const MambaConfig& config() const { return cfg_; }
  Embedding embeddings;
  std::vector<std::unique_ptr<MambaBlock>> layers;
  Norm norm_f;

 private:
  BackboneOutput forward_strand(const Tensor& ids, const ForwardOptions& opt) const;
  MambaConfig cfg_;
};

// New empty streaming cache for batch B on a device.
InferenceCache make_cache(const MambaConfig& cfg, int64_t batch, DType cd, Device dev);

}  // namespace mt::nn
