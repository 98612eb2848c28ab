// Differentiable ops used by model heads and losses.
#pragma once

#include "core/tensor.h"

namespace mt {

// weight [V, d], ids (i32 or i64, any shape S) -> [S..., d]. An id outside [0, V) is an mt::Error(Data) naming it.
// Backward scatters (adds) gradient rows into a dense [V, d] gradient.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// log(softmax(x)) along dim, computed with the max subtracted.
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

// Mean cross-entropy of logits [N, C] against integer targets [N] (i32 / i64). Rows whose target equals
// ignore_index contribute nothing and are not counted in the mean (all ignored -> 0). Returns a scalar (shape [])
// in f32 (f64 for f64 logits). Targets outside [0, C) (other than ignore_index) are an mt::Error(Data).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// cross_entropy(linear(h, weight), targets, ignore_index) without the [N, V] logits (kernels/linear_xent.h): the
// LM head and the loss run in chunks of chunk_rows rows (0: as many rows as fit in 512 MiB of logits, balanced).
// h [N, H] and weight [V, H] share a float dtype and device; targets [N] as for cross_entropy (checked on the host
// before any work: a bad target is an mt::Error(Data) naming its row). With a gradient, the forward also computes
// dh and dweight (scaled by the upstream gradient in the backward), so no chunk is recomputed. Same result as the
// unfused pair up to rounding; f32 (f64 for f64) scalar.
Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index = -100,
                            int64_t chunk_rows = 0);

}  // namespace mt
