// log_softmax and cross_entropy (autograd/ops/cross_entropy.h): values, ignore_index and the mean, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/shape_ops.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::error_of;
using mt::test::randn64;

TEST(CrossEntropy, LogSoftmaxValues) {
  Tensor x = Tensor::from_vector({1, 2, 3, 1000, 1000, 1000}, {2, 3}, DType::F64);
  Tensor y = log_softmax(x, -1);
  std::vector<double> v = y.to_vector();
  const double l = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(v[0], 1 - l, 1e-12);
  EXPECT_NEAR(v[2], 3 - l, 1e-12);
  EXPECT_NEAR(v[3], -std::log(3.0), 1e-12);  // large values: max subtracted, no overflow
  // dim 0 of a [2, 3]: each column normalised.
  Tensor y0 = log_softmax(x, 0);
  std::vector<double> v0 = y0.to_vector();
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(std::exp(v0[c]) + std::exp(v0[3 + c]), 1.0, 1e-12);
  EXPECT_EQ(log_softmax(Tensor::from_vector({5}, {1})).to_vector(), (std::vector<double>{0}));  // C = 1
  Tensor f = log_softmax(x.to(DType::F32));
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_CLOSE(f, y, 1e-5, 1e-5);
  EXPECT_LT(test::rel_l2(log_softmax(x.to(DType::BF16)).to_vector(), v), 1e-2);
}

TEST(CrossEntropy, CrossEntropyValuesIgnoreIndexAndMean) {
  Tensor x = randn64({4, 5}, 1, 2.0);
  Tensor t = Tensor::from_vector_i64({3, kIgnoreIndex, 0, 4}, {4});
  Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::F64);
  std::vector<double> ls = log_softmax(x, -1).to_vector();
  const double ref = -(ls[0 * 5 + 3] + ls[2 * 5 + 0] + ls[3 * 5 + 4]) / 3.0;
  EXPECT_NEAR(loss.item(), ref, 1e-12);
  // f32 logits give an f32 scalar; bf16 logits too.
  Tensor l32 = cross_entropy(x.to(DType::F32), t.to(DType::I32));
  EXPECT_EQ(l32.dtype(), DType::F32);
  EXPECT_NEAR(l32.item(), ref, 1e-5);
  Tensor l16 = cross_entropy(x.to(DType::BF16), t);
  EXPECT_EQ(l16.dtype(), DType::F32);
  EXPECT_NEAR(l16.item(), ref, 3e-2 * std::fabs(ref));
  // Custom ignore_index, and every row ignored -> 0 with a zero gradient.
  EXPECT_NEAR(cross_entropy(x, Tensor::from_vector_i64({3, 7, 0, 4}, {4}), 7).item(), ref, 1e-12);
  Tensor xa = randn64({2, 3}, 2);
  set_requires_grad(xa);
  Tensor la = cross_entropy(xa, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex}, {2}));
  EXPECT_EQ(la.item(), 0.0);
  backward(la);
  EXPECT_EQ(grad(xa).to_vector(), std::vector<double>(6, 0.0));
  // C = 1: log_softmax is 0, so the loss is 0.
  EXPECT_NEAR(cross_entropy(randn64({3, 1}, 3), Tensor::from_vector_i64({0, 0, 0}, {3})).item(), 0.0, 1e-15);
}

TEST(CrossEntropy, CrossEntropyErrors) {
  Tensor x = Tensor::zeros({3, 4});
  ErrorKind kind = ErrorKind::Internal;
  std::string m = error_of([&] { cross_entropy(x, Tensor::from_vector_i64({0, 4, 1}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("target 4"), std::string::npos) << m;
  EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  m = error_of([&] { cross_entropy(x, Tensor::from_vector_i64({0, 1, -5}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("target -5"), std::string::npos) << m;
  EXPECT_NE(m.find("row 2"), std::string::npos) << m;
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector_i64({0, 1}, {2})), Error);  // N mismatch
  EXPECT_THROW(cross_entropy(Tensor::zeros({2, 3, 4}), Tensor::from_vector_i64({0, 1}, {2})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::zeros({3})), Error);  // float targets
}
