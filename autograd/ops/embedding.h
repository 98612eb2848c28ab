// Differentiable embedding lookup (kernels in kernels/embedding.h).
#pragma once

#include "core/tensor.h"

namespace mt {

// weight [V, d], ids (i32 or i64, any shape S) -> [S..., d]. An id outside [0, V) is an mt::Error(Data) naming it.
// Backward scatters (adds) gradient rows into a dense [V, d] gradient.
Tensor embedding(const Tensor& weight, const Tensor& ids);

}  // namespace mt
