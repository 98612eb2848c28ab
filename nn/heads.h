// Task heads on top of the Mamba backbone.
//   MambaLMHeadModel: causal LM, logits = h @ embeddings^T (tied, docs/DESIGN.md) or an untied lm_head.
//   MambaForSequenceClassification: pooled features (mean / max / last token / final SSM state, honouring the
//     padding mask) -> linear classifier.
//   MambaForTokenClassification: per-token linear classifier.
#pragma once

#include <memory>
#include <string>

#include "nn/mamba.h"

namespace mt::nn {

struct LMOutput {
  Tensor logits;  // [B, L, V] in the compute dtype (undefined when not asked for)
  Tensor loss;    // scalar: mean next-token cross-entropy (positions 0..L-2 predict 1..L-1), if requested
  BackboneOutput backbone;
};

class MambaLMHeadModel : public Module {
 public:
  explicit MambaLMHeadModel(const MambaConfig& cfg);
  // targets (optional) [B, L] i64: token ids to predict, kIgnoreIndex (core/ignore_index.h) where nothing is (e.g.
  // pads); when undefined and with_loss, the input ids are the targets. The loss uses logits[:, t] against targets[:,
  // t+1], computed by the chunked linear_cross_entropy straight from the hidden states (no [B, L, V] logits).
  // with_logits = false skips the logits (training only needs the loss).
  LMOutput forward(const Tensor& ids, const ForwardOptions& opt, bool with_loss = false,
                   const Tensor& targets = Tensor(), bool with_logits = true) const;
  // The mean next-token loss from the final hidden states [B, L, d_model] (compute dtype) and targets [B, L].
  Tensor next_token_loss_fused(const Tensor& hidden, const Tensor& targets, DType cd) const;
  Tensor logits(const Tensor& hidden, DType cd) const;
  // Masked-LM loss: mean cross-entropy of the logits at position t against targets[:, t] (no shift; kIgnoreIndex = not
  // scored), from the final hidden states [B, L, d_model] through the chunked head + loss.
  Tensor masked_lm_loss(const Tensor& hidden, const Tensor& targets, DType cd) const;
  // The output projection [V, d_model] in the compute dtype: lm_head, or the embedding matrix when tied.
  Tensor head_weight(DType cd) const;
  void init_parameters(Generator& gen);
  const MambaConfig& config() const { return backbone.config(); }

  MambaBackbone backbone;
  std::unique_ptr<Linear> lm_head;  // untied only (tied: the embedding matrix)
};

// Next-token loss of logits [B, L, V] against targets [B, L] (kIgnoreIndex skipped), mean over counted positions
// (the unfused form, for logits computed elsewhere).
Tensor next_token_loss(const Tensor& logits, const Tensor& targets);

class MambaForSequenceClassification : public Module {
 public:
  // pooling: "mean" | "max" | "last" | "state" (the last layer's final SSM state, flattened [B, d_inner*N]).
  MambaForSequenceClassification(const MambaConfig& cfg, int64_t num_classes, const std::string& pooling);
  Tensor forward(const Tensor& ids, const ForwardOptions& opt) const;  // logits [B, C]
  void init_parameters(Generator& gen);
  const MambaConfig& config() const { return backbone.config(); }

  MambaBackbone backbone;
  Linear classifier;

 private:
  std::string pooling_;
};

class MambaForTokenClassification : public Module {
 public:
  MambaForTokenClassification(const MambaConfig& cfg, int64_t num_classes);
  Tensor forward(const Tensor& ids, const ForwardOptions& opt) const;  // logits [B, L, C]
  void init_parameters(Generator& gen);

  MambaBackbone backbone;
  Linear classifier;
};

}  // namespace mt::nn
