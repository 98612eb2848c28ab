#include "nn/heads.h"

#include <cmath>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/pool.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/shape_ops.h"
#include "nn/init.h"

namespace mt::nn {

namespace {
// Classifier heads: weight U(+-1/sqrt(fan_in)) (PyTorch's Linear default), bias 0.
void init_classifier(Linear& classifier, Generator& gen) {
  const double b = 1.0 / std::sqrt(static_cast<double>(classifier.weight->size(1)));
  init_uniform(*classifier.weight, gen, -b, b);
  classifier.bias->zero_();
}
}  // namespace

// ---------------------------------------------------------------- LM
MambaLMHeadModel::MambaLMHeadModel(const MambaConfig& cfg) : backbone(cfg) {
  register_module("backbone", backbone);
  if (!cfg.tie_embeddings) {
    lm_head = std::make_unique<Linear>(cfg.d_model, cfg.vocab_size, false);
    register_module("lm_head", *lm_head);
  }
}

void MambaLMHeadModel::init_parameters(Generator& gen) {
  backbone.init_parameters(gen);
  if (lm_head) init_normal(*lm_head->weight, gen, 0.0, config().initializer_range);
}

Tensor MambaLMHeadModel::head_weight(DType cd) const {
  Tensor w = as_compute(lm_head ? *lm_head->weight : *backbone.embeddings.weight, cd);
  const MambaConfig& c = config();
  if (!c.rc_equivariant) return w;
  // The head reads [h_t, flip_channels(h'_t)] (h' the reverse strand's output aligned with position t): token v
  // scores h_t . W_v + h'_t . W_comp(v), so its weight row is [W_v, flip_channels(W_comp(v))].
  const Tensor comp = Tensor::from_vector_i64(c.rc_complement, {c.vocab_size}).to(w.device());
  return concat({w, flip(embedding(w, comp), 1)}, 1);
}

Tensor MambaLMHeadModel::logits(const Tensor& hidden, DType cd) const { return linear(hidden, head_weight(cd)); }

Tensor next_token_loss(const Tensor& logits, const Tensor& targets) {
  MT_CHECK_SHAPE(
      logits.dim() == 3 && targets.dim() == 2 && targets.size(0) == logits.size(0) && targets.size(1) == logits.size(1),
      "next_token_loss: logits ", logits.describe(), " and targets ", targets.describe());
  const int64_t B = logits.size(0), L = logits.size(1), V = logits.size(2);
  if (L < 2) return mul_scalar(sum(logits), 0.0);  // nothing to predict: a zero that still has a graph
  Tensor lg = reshape(slice(logits, 1, 0, L - 1), {B * (L - 1), V});
  Tensor tg = slice(targets, 1, 1, L).contiguous().view({B * (L - 1)});
  return cross_entropy(lg, tg, kIgnoreIndex);
}

Tensor MambaLMHeadModel::next_token_loss_fused(const Tensor& hidden, const Tensor& targets, DType cd) const {
  MT_CHECK_SHAPE(
      hidden.dim() == 3 && targets.dim() == 2 && targets.size(0) == hidden.size(0) && targets.size(1) == hidden.size(1),
      "next_token_loss: hidden states ", hidden.describe(), " and targets ", targets.describe());
  const int64_t B = hidden.size(0), L = hidden.size(1), H = hidden.size(2);
  if (L < 2) return mul_scalar(sum(cast(hidden, cd == DType::F64 ? DType::F64 : DType::F32)), 0.0);
  Tensor hs = reshape(slice(hidden, 1, 0, L - 1), {B * (L - 1), H});
  Tensor tg = slice(targets, 1, 1, L).contiguous().view({B * (L - 1)});
  return linear_cross_entropy(hs, head_weight(cd), tg, kIgnoreIndex);
}

Tensor MambaLMHeadModel::masked_lm_loss(const Tensor& hidden, const Tensor& targets, DType cd) const {
  MT_CHECK_SHAPE(
      hidden.dim() == 3 && targets.dim() == 2 && targets.size(0) == hidden.size(0) && targets.size(1) == hidden.size(1),
      "masked_lm_loss: hidden states ", hidden.describe(), " and targets ", targets.describe());
  const int64_t B = hidden.size(0), L = hidden.size(1), H = hidden.size(2);
  return linear_cross_entropy(reshape(hidden, {B * L, H}), head_weight(cd), targets.contiguous().view({B * L}),
                              kIgnoreIndex);
}

LMOutput MambaLMHeadModel::forward(const Tensor& ids, const ForwardOptions& opt, bool with_loss, const Tensor& targets,
                                   bool with_logits) const {
  LMOutput out;
  out.backbone = backbone.forward(ids, opt);
  if (with_logits) out.logits = logits(out.backbone.last_hidden_state, opt.compute_dtype);
  if (with_loss)
    out.loss =
        next_token_loss_fused(out.backbone.last_hidden_state, targets.defined() ? targets : ids, opt.compute_dtype);
  return out;
}

// ---------------------------------------------------------------- sequence classification
MambaForSequenceClassification::MambaForSequenceClassification(const MambaConfig& cfg, int64_t num_classes,
                                                               const std::string& pooling)
    : backbone(cfg),
      classifier(pooling == "state" ? cfg.d_inner * cfg.d_state : cfg.d_model, num_classes, true),
      pooling_(pooling) {
  MT_CHECK(num_classes >= 2, ErrorKind::Config, "sequence classification needs at least 2 classes, got ", num_classes);
  if (pooling != "state") pool_mode_from_name(pooling);  // validates the name
  MT_CHECK(!cfg.rc_equivariant || pooling == "mean" || pooling == "max", ErrorKind::Config,
           "a reverse-complement-equivariant model pools with mean or max (the pooled features of a sequence and its "
           "reverse complement are then the same), got pooling ",
           pooling);
  register_module("backbone", backbone);
  register_module("classifier", classifier);
}

void MambaForSequenceClassification::init_parameters(Generator& gen) {
  backbone.init_parameters(gen);
  init_classifier(classifier, gen);
}

Tensor pool_features(const BackboneOutput& bo, const Tensor& mask, const std::string& pooling, const MambaConfig& cfg,
                     DType cd) {
  if (pooling == "state") {
    MT_CHECK(!cfg.bidirectional && !cfg.rc_equivariant, ErrorKind::Config,
             "pooling 'state' needs a unidirectional model (a bidirectional or reverse-complement-equivariant one has "
             "two final states)");
    const int64_t B = bo.last_hidden_state.size(0);
    return cast(reshape(bo.last_ssm_state, {B, -1}), cd);
  }
  Tensor features = masked_pool(bo.last_hidden_state, mask, pool_mode_from_name(pooling));
  if (cfg.rc_equivariant) {  // [pool(h), flip(pool(h'))] -> pool(h) + pool(h'): the same for a sequence and its rc
    const int64_t d = cfg.d_model;
    features = add(slice(features, 1, 0, d), flip(slice(features, 1, d, 2 * d), 1));
  }
  return features;
}

Tensor MambaForSequenceClassification::features(const BackboneOutput& bo, const ForwardOptions& opt) const {
  return pool_features(bo, opt.mask, pooling_, config(), opt.compute_dtype);
}

Tensor MambaForSequenceClassification::classify(const Tensor& features, DType cd) const {
  return classifier.forward(features, cd);
}

namespace {

// ForwardOptions::classifier_dropout on a classifier's input (identity without a dropout generator).
Tensor classifier_input(const Tensor& x, const ForwardOptions& opt) {
  return opt.dropout_gen && opt.classifier_dropout > 0 ? dropout(x, opt.classifier_dropout, true, *opt.dropout_gen) : x;
}

}  // namespace

Tensor MambaForSequenceClassification::forward(const Tensor& ids, const ForwardOptions& opt) const {
  return classify(classifier_input(features(backbone.forward(ids, opt), opt), opt), opt.compute_dtype);
}

// ---------------------------------------------------------------- token classification
MambaForTokenClassification::MambaForTokenClassification(const MambaConfig& cfg, int64_t num_classes)
    : backbone(cfg), classifier(cfg.d_model, num_classes, true) {
  MT_CHECK(num_classes >= 2, ErrorKind::Config, "token classification needs at least 2 classes, got ", num_classes);
  register_module("backbone", backbone);
  register_module("classifier", classifier);
}

void MambaForTokenClassification::init_parameters(Generator& gen) {
  backbone.init_parameters(gen);
  init_classifier(classifier, gen);
}

Tensor MambaForTokenClassification::forward(const Tensor& ids, const ForwardOptions& opt) const {
  BackboneOutput bo = backbone.forward(ids, opt);
  return classifier.forward(classifier_input(bo.last_hidden_state, opt), opt.compute_dtype);
}

}  // namespace mt::nn
