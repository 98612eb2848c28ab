// One batch of training / evaluation data, as produced by the data sources in data/ (TextDataset,
// SelectiveCopying). Everything lives on the CPU; the trainer moves ids/targets to the device.
//
// Target convention (the model's, nn/heads.h next_token_loss): the loss compares logits[:, t] with
// targets[:, t+1]. So for plain language modelling targets == ids (targets[:, 0] is never scored), and any
// position that must not be scored holds -100 (cross_entropy's ignore_index).
//
// Deterministic data: every source is a pure function of (seed, global sample index), so a resumed run that
// restarts at sample `samples_seen` sees exactly the batches it would have seen without the interruption.
#pragma once

#include <cstdint>

#include "core/ignore_index.h"
#include "core/tensor.h"

namespace mt::data {

// Value of targets at positions that are not scored (cross_entropy's ignore_index).
using mt::kIgnoreIndex;

struct Batch {
  Tensor ids;          // [B, L] i64, CPU
  Tensor targets;      // [B, L] i64, CPU; kIgnoreIndex = not scored
  Tensor mask;         // [B, L] f32, 1 = real token / 0 = padding; undefined when every position is real
  Tensor labels;       // [B] i64, classification data only: the class, kIgnoreIndex for padding rows
  int64_t tokens = 0;  // real (non-padding) input tokens: weight for averaging losses over batches
};

// Document starts of [B, L] i64 ids for data.reset_at_document_end (nn/mamba.h ForwardOptions::reset): i32 [B, L],
// 1 at t >= 1 where ids[:, t - 1] is the end-of-document token eod_id (the next document starts there), else 0. An
// undefined Tensor when eod_id < 0 or no window holds a document start, so such batches run exactly as without it.
// Position 0 is never a start: a window's first token has no state before it (chunks of a window slice this).
Tensor document_starts(const Tensor& ids, int64_t eod_id);

// A validation batch of batch_size rows of length L whose first `real` rows the caller fills: ids 0, targets -100
// (nothing scored), and when real < batch_size a mask that is 1 on the real rows and 0 on the padding rows;
// tokens = real * L.
Batch padded_eval_batch(int64_t batch_size, int64_t L, int64_t real);

}  // namespace mt::data
