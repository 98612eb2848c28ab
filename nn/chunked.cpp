#include "nn/chunked.h"

#include <algorithm>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/shape_ops.h"

namespace mt::nn {

namespace {

// Detached copies of a cache's states (new storage: the next chunk's forward replaces the cache's tensors).
InferenceCache copy_states(const InferenceCache& c) {
  InferenceCache out;
  for (const LayerState& s : c.layers)
    out.layers.push_back({s.conv_state.detach().clone(), s.ssm_state.detach().clone()});
  return out;
}

// Chunk [s, e) of a sequence of length L predicts targets[:, t + 1] for t in [s, min(e, L - 1)): the mean loss over
// those of its targets that are scored, times (scored in chunk) / (scored in sequence). Undefined when the chunk
// scores nothing.
Tensor chunk_loss_share(const MambaLMHeadModel& model, const Tensor& hidden, const Tensor& targets, int64_t s,
                        int64_t count, int64_t total, DType cd) {
  const int64_t B = hidden.size(0), Lc = hidden.size(1), H = hidden.size(2), L = targets.size(1);
  const int64_t n_pred = std::min(s + Lc, L - 1) - s;
  if (n_pred <= 0 || count == 0) return Tensor();
  Tensor hs = reshape(slice(hidden, 1, 0, n_pred), {B * n_pred, H});
  Tensor tg = slice(targets, 1, s + 1, s + 1 + n_pred).contiguous().view({B * n_pred});
  return mul_scalar(linear_cross_entropy(hs, model.head_weight(cd), tg, kIgnoreIndex),
                    static_cast<double>(count) / static_cast<double>(total));
}

// Scored targets of each chunk of length chunk_len (see chunk_loss_share).
std::vector<int64_t> scored_per_chunk(const Tensor& targets, int64_t chunk_len) {
  const int64_t B = targets.size(0), L = targets.size(1);
  const std::vector<int64_t> t = targets.to_vector_i64();
  std::vector<int64_t> counts;
  for (int64_t s = 0; s < L; s += chunk_len) {
    const int64_t e = std::min(s + chunk_len, L - 1);
    int64_t n = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = s; p < e; ++p) n += t[static_cast<size_t>(b * L + p + 1)] != kIgnoreIndex;
    counts.push_back(n);
  }
  return counts;
}

// The forward options of chunk [s, e): the document starts of those positions.
ForwardOptions chunk_options(const ForwardOptions& opt, int64_t s, int64_t e) {
  ForwardOptions fo = opt;
  if (opt.reset.defined()) fo.reset = slice(opt.reset, 1, s, e).contiguous();
  return fo;
}

}  // namespace

ChunkedLMLoss::ChunkedLMLoss(const MambaLMHeadModel& model, const Tensor& ids, const Tensor& targets, int64_t chunk_len,
                             const ForwardOptions& opt)
    : model_(model), ids_(ids), targets_(targets), opt_(opt) {
  MT_CHECK_SHAPE(ids.dim() == 2 && targets.shape() == ids.shape(), "chunked LM loss: ids ", ids.describe(),
                 " and targets ", targets.describe(), " must both be [B, L]");
  MT_CHECK_SHAPE(chunk_len >= 1, "chunked LM loss: chunk_len must be >= 1, got ", chunk_len);
  MT_CHECK_SHAPE(opt.cache == nullptr, "chunked LM loss: the forward options must not carry a cache");
  MT_CHECK(!model.config().bidirectional, ErrorKind::Usage,
           "chunked LM loss: a bidirectional model needs the whole sequence");
  const int64_t B = ids.size(0), L = ids.size(1);
  for (int64_t s = 0; s < L; s += chunk_len) starts_.push_back(s);
  counts_ = scored_per_chunk(targets, chunk_len);
  for (int64_t n : counts_) total_ += n;
  // Step 1: the states entering chunks 1 .. C-1.
  boundary_.resize(starts_.size());
  NoGradGuard ng;
  InferenceCache cache = make_cache(model.config(), B, opt.compute_dtype, ids.device());
  for (size_t c = 0; c + 1 < starts_.size(); ++c) {
    ForwardOptions fo = chunk_options(opt_, starts_[c], starts_[c + 1]);
    fo.cache = &cache;
    model.backbone.forward(slice(ids, 1, starts_[c], starts_[c + 1]).contiguous(), fo);
    boundary_[c + 1] = copy_states(cache);
  }
}

Tensor ChunkedLMLoss::objective(int64_t c, double loss_scale) {
  MT_ASSERT(c >= 0 && c < num_chunks(), "chunk ", c, " of ", num_chunks());
  const int64_t B = ids_.size(0), L = ids_.size(1);
  const int64_t s = starts_[static_cast<size_t>(c)];
  const int64_t e = c + 1 < num_chunks() ? starts_[static_cast<size_t>(c) + 1] : L;
  const DType cd = opt_.compute_dtype;
  const DType ld = cd == DType::F64 ? DType::F64 : DType::F32;
  if (c == 0) {
    in_ = make_cache(model_.config(), B, cd, ids_.device());  // zero states: nothing upstream of them
  } else {
    in_ = copy_states(boundary_[static_cast<size_t>(c)]);
    for (LayerState& st : in_.layers) {
      set_requires_grad(st.conv_state);
      set_requires_grad(st.ssm_state);
    }
  }
  // The forward updates the cache's tensors; keep the leaves in in_ and hand the forward a copy of the handles.
  InferenceCache run = in_;
  ForwardOptions fo = chunk_options(opt_, s, e);
  fo.cache = &run;
  const BackboneOutput out = model_.backbone.forward(slice(ids_, 1, s, e).contiguous(), fo);
  Tensor obj;
  const Tensor part =
      chunk_loss_share(model_, out.last_hidden_state, targets_, s, counts_[static_cast<size_t>(c)], total_, cd);
  if (part.defined()) {
    {
      NoGradGuard ng;
      const Tensor v = cast(part.detach(), ld);
      loss_ = loss_.defined() ? add(loss_, v) : v;
    }
    obj = mul_scalar(part, loss_scale);
  }
  for (size_t i = 0; i < d_next_.size(); ++i) {
    for (const auto& pair : {std::make_pair(run.layers[i].conv_state, d_next_[i].conv_state),
                             std::make_pair(run.layers[i].ssm_state, d_next_[i].ssm_state)}) {
      if (!pair.second.defined()) continue;
      Tensor term = cast(sum(mul(pair.first, pair.second)), ld);
      obj = obj.defined() ? add(obj, term) : term;
    }
  }
  if (!obj.defined()) {  // nothing scored in this chunk and nothing downstream: a zero that still has a graph
    obj = mul_scalar(cast(sum(out.last_hidden_state), ld), 0.0);
  }
  if (!loss_.defined() && c == 0) loss_ = Tensor::zeros({}, ld, ids_.device());
  return obj;
}

void ChunkedLMLoss::collect(int64_t c) {
  d_next_.clear();
  if (c == 0) return;
  for (const LayerState& st : in_.layers) d_next_.push_back({grad(st.conv_state), grad(st.ssm_state)});
  in_ = InferenceCache();
}

Tensor chunked_lm_loss(const MambaLMHeadModel& model, const Tensor& ids, const Tensor& targets, int64_t chunk_len,
                       const ForwardOptions& opt) {
  MT_CHECK_SHAPE(ids.dim() == 2 && targets.shape() == ids.shape() && chunk_len >= 1, "chunked LM loss: ids ",
                 ids.describe(), ", targets ", targets.describe(), ", chunk_len ", chunk_len);
  NoGradGuard ng;
  const int64_t B = ids.size(0), L = ids.size(1);
  const DType ld = opt.compute_dtype == DType::F64 ? DType::F64 : DType::F32;
  const std::vector<int64_t> counts = scored_per_chunk(targets, chunk_len);
  int64_t total = 0;
  for (int64_t n : counts) total += n;
  InferenceCache cache = make_cache(model.config(), B, opt.compute_dtype, ids.device());
  Tensor loss = Tensor::zeros({}, ld, ids.device());
  for (int64_t s = 0, c = 0; s < L; s += chunk_len, ++c) {
    ForwardOptions fo = chunk_options(opt, s, std::min(L, s + chunk_len));
    fo.cache = &cache;
    const BackboneOutput out = model.backbone.forward(slice(ids, 1, s, std::min(L, s + chunk_len)).contiguous(), fo);
    const Tensor part = chunk_loss_share(model, out.last_hidden_state, targets, s, counts[static_cast<size_t>(c)],
                                         total, opt.compute_dtype);
    if (part.defined()) loss = add(loss, cast(part, ld));
  }
  return loss;
}

}  // namespace mt::nn
