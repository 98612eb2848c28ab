// Differentiable log_softmax and cross_entropy (kernels in kernels/cross_entropy.h).
#pragma once

#include "core/ignore_index.h"
#include "core/tensor.h"

namespace mt {

// log(softmax(x)) along dim, computed with the max subtracted.
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

// Mean cross-entropy of logits [N, C] against integer targets [N] (i32 / i64). Rows whose target equals
// ignore_index contribute nothing and are not counted in the mean (all ignored -> 0). Returns a scalar (shape [])
// in f32 (f64 for f64 logits). Targets outside [0, C) (other than ignore_index) are an mt::Error(Data).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = kIgnoreIndex);

}  // namespace mt
