// Shared by the CPU and CUDA tests: the gradient of a bf16 weight copy (cached_cast) reaches its f32 master as the
// f32 sum the op computed, not rounded to bf16 on the way. The sums below are exact in f32 and fall between two
// bf16 values (1 + 2^-10, 1 + 2^-8), so one rounding anywhere shows.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/reduce.h"

namespace mt::testing_weight_grad {

inline Tensor leaf(const std::vector<double>& v, const Shape& s, Device dev) {
  Tensor t = Tensor::from_vector(v, s, DType::F32).to(dev);
  set_requires_grad(t);
  return t;
}

// dW of linear(x, W) under a sum is x's column sums: rows (1, 1), (2^-10, 2^-9), (0, 2^-9).
inline void expect_unrounded_weight_grads(Device dev) {
  const double e10 = std::ldexp(1.0, -10), e9 = std::ldexp(1.0, -9);
  const Tensor x = Tensor::from_vector({1, 1, e10, e9, 0, e9}, {3, 2}, DType::F32).to(DType::BF16).to(dev);
  const std::vector<double> col_sums = {1 + e10, 1 + 2 * e9};
  for (int split = 0; split < 2; ++split) {
    Tensor W = leaf({0.5, -0.25, 0.75, 1.5}, {2, 2}, dev);
    const Tensor w16 = cached_cast(W, DType::BF16);
    Tensor loss;
    if (split) {
      const std::vector<Tensor> parts = linear_split(x, w16, Tensor(), {1, 1});
      loss = add(sum(cast(parts[0], DType::F32)), sum(cast(parts[1], DType::F32)));
    } else {
      loss = sum(cast(linear(x, w16), DType::F32));
    }
    backward(loss);
    ASSERT_TRUE(grad(W).defined());
    EXPECT_EQ(grad(W).dtype(), DType::F32);
    EXPECT_EQ(grad(W).to(Device::cpu()).to_vector(),
              (std::vector<double>{col_sums[0], col_sums[1], col_sums[0], col_sums[1]}))
        << (split ? "linear_split" : "linear");
  }
  // Through cast() (no master copy) the weight's gradient is the bf16 one, rounded: the check above can fail.
  {
    Tensor W = leaf({0.5, -0.25, 0.75, 1.5}, {2, 2}, dev);
    backward(sum(cast(linear(x, cast(W, DType::BF16)), DType::F32)));
    EXPECT_EQ(grad(W).to(Device::cpu()).to_vector(), (std::vector<double>{1, 1, 1, 1}));
  }
  // embedding: id 0 looked up twice, with output gradients 1 and 2^-10.
  Tensor E = leaf({0.5, -0.25, 0.75, 1.5, 2, 3}, {3, 2}, dev);
  const Tensor ids = Tensor::from_vector_i64({0, 0, 1}, {3}).to(dev);
  const Tensor coef = Tensor::from_vector({1, 1, e10, e10, 1, 1}, {3, 2}, DType::F32).to(dev);
  backward(sum(mul(cast(embedding(cached_cast(E, DType::BF16), ids), DType::F32), coef)));
  EXPECT_EQ(grad(E).dtype(), DType::F32);
  EXPECT_EQ(grad(E).to(Device::cpu()).to_vector(), (std::vector<double>{1 + e10, 1 + e10, 1, 1, 0, 0}));
}

}  // namespace mt::testing_weight_grad
