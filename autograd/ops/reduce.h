// Differentiable reductions over dimensions. dims may be negative; an empty dims list reduces every dimension.
// Accumulation is in f32 (f64 for f64 tensors); results keep the input dtype.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace mt {

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Sum a gradient of a broadcast result back to `shape` (the backward of broadcasting). Not recorded.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace mt
