// Differentiable masked pooling over the sequence dimension (see kernels/pool.h for the math).
#pragma once

#include <string>

#include "core/tensor.h"
#include "kernels/pool.h"

namespace mt {

// x [B, L, D] -> [B, D]; mask [B, L] (any dtype, nonzero = real token) may be undefined.
Tensor masked_pool(const Tensor& x, const Tensor& mask, kernels::PoolMode mode);
// "mean" | "max" | "last"; throws mt::Error(Config) otherwise.
kernels::PoolMode pool_mode_from_name(const std::string& name);

}  // namespace mt
