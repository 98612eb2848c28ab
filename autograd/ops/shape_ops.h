// Differentiable shape ops. reshape / transpose / slice are views when the layout allows (no copy); the
// backward routes gradients to the right elements.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace mt {

Tensor reshape(const Tensor& a, const Shape& shape);        // one -1 allowed; copies only if a is not contiguous
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);  // view
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);  // view
// Elements start, start+step, ... < end along dim (a view). Negative start / end count from the end.
Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor concat(const std::vector<Tensor>& parts, int64_t dim);
// Consecutive pieces of `a` along dim (sizes sum to its size there): contiguous copies, or with views = true views
// into `a` (no copy; for consumers that read strided pieces in place). Either way the backward writes each piece's
// gradient into its region of one tensor (cheaper than contiguous(slice(...)) per piece).
std::vector<Tensor> split(const Tensor& a, int64_t dim, const std::vector<int64_t>& sizes, bool views = false);
Tensor flip(const Tensor& a, int64_t dim);       // reverse along dim (a copy)
Tensor unsqueeze(const Tensor& a, int64_t dim);  // view
Tensor squeeze(const Tensor& a, int64_t dim);    // view; dim must have size 1
Tensor contiguous(const Tensor& a);              // differentiable .contiguous()

}  // namespace mt
