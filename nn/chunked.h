// Exact training of a language model over long sequences, chunk by chunk (trainer.chunk_len).
//
// The only thing a Mamba LM carries along the sequence is each layer's state: the conv's last K-1 inputs and the SSM
// state. So the sequence [0, L) is cut into chunks [s_c, e_c) of chunk_len tokens:
//   1. Without a tape, chunks 0 .. C-2 run forward from zero states; the states entering each chunk (the boundary
//      states S_c, every layer's conv and SSM state) are kept, nothing else.
//   2. For c = C-1 down to 0: chunk c runs again on the tape from S_c (made a leaf that wants a gradient), giving
//      its share of the loss and the states leaving it, S_{c+1}'. Its objective is
//          loss_scale * (sum of chunk c's token losses) / (scored tokens of the whole sequence)
//          + sum over layers of <S_{c+1}', dS_{c+1}>
//      where dS_{c+1} is the gradient that chunk c+1's backward left on its incoming states. The second term passes
//      exactly that gradient back into chunk c (its derivative with respect to S_{c+1}' is dS_{c+1}), so the
//      parameter gradients summed over the chunks' backward passes are those of the whole sequence, not truncated.
// Peak activation memory is one chunk's; the price is one extra forward of chunks 0 .. C-2.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/heads.h"

namespace mt::nn {

class ChunkedLMLoss {
 public:
  // ids, targets [B, L] i64 on the model's device (targets: the ids to predict, kIgnoreIndex where nothing is
  // predicted; position t predicts targets[:, t + 1]); chunk_len >= 1. opt.compute_dtype is the compute dtype;
  // opt.cache must be unset. Runs step 1.
  ChunkedLMLoss(const MambaLMHeadModel& model, const Tensor& ids, const Tensor& targets, int64_t chunk_len,
                const ForwardOptions& opt);

  int64_t num_chunks() const { return static_cast<int64_t>(starts_.size()); }
  // Step 2 for chunk c; call for c = num_chunks() - 1 down to 0, each followed by backward() on the result and then
  // collect(c). A scalar on the tape (f32; f64 in an f64 model).
  Tensor objective(int64_t c, double loss_scale);
  // Reads the gradient of the states entering chunk c, for objective(c - 1).
  void collect(int64_t c);
  // The mean loss over the whole sequence (detached scalar), valid once objective(0) ran.
  Tensor loss() const { return loss_; }
  // Scored target tokens of the whole sequence.
  int64_t scored() const { return total_; }

 private:
  const MambaLMHeadModel& model_;
  Tensor ids_, targets_;
  ForwardOptions opt_;
  std::vector<int64_t> starts_;           // first position of each chunk
  std::vector<int64_t> counts_;           // scored targets of each chunk
  int64_t total_ = 0;                     // scored targets of the sequence
  std::vector<InferenceCache> boundary_;  // boundary_[c]: the states entering chunk c (c >= 1)
  InferenceCache in_;                     // the leaves of the chunk whose objective ran last
  std::vector<LayerState> d_next_;        // gradient on the states leaving the next chunk to run
  Tensor loss_;
};

// The mean next-token loss of [B, L] ids against targets without a tape, chunk by chunk (evaluation of long
// sequences: one chunk's activations at a time). Same value as the whole-sequence loss up to rounding.
Tensor chunked_lm_loss(const MambaLMHeadModel& model, const Tensor& ids, const Tensor& targets, int64_t chunk_len,
                       const ForwardOptions& opt);

}  // namespace mt::nn
