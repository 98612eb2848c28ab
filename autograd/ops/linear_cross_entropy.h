// Differentiable fused LM head and loss (kernels in kernels/linear_cross_entropy.h).
#pragma once

#include "core/ignore_index.h"
#include "core/tensor.h"

namespace mt {

// cross_entropy(linear(h, weight), targets, ignore_index) without the [N, V] logits (kernels/linear_cross_entropy.h):
// the LM head and the loss run in chunks of chunk_rows rows (0: as many rows as fit in 512 MiB of logits, balanced).
// h [N, H] and weight [V, H] share a float dtype and device; targets [N] as for cross_entropy (checked on the host
// before any work: a bad target is an mt::Error(Data) naming its row). With a gradient, the forward also computes
// dh and dweight (scaled by the upstream gradient in the backward), so no chunk is recomputed. Same result as the
// unfused pair up to rounding; f32 (f64 for f64) scalar.
Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets,
                            int64_t ignore_index = kIgnoreIndex, int64_t chunk_rows = 0);

}  // namespace mt
