// Reductions on the CPU (autograd/ops/reduce.h): sum / mean values over every dim set, sum_to_shape, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::randn64;

TEST(Reduce, SumMeanValues) {
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(sum(x).shape(), Shape{});
  EXPECT_EQ(sum(x).item(), 21.0);
  EXPECT_EQ(sum(x, {0}).to_vector(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum(x, {1}).to_vector(), (std::vector<double>{6, 15}));
  EXPECT_EQ(sum(x, {-1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(sum(x, {}, true).shape(), (Shape{1, 1}));
  EXPECT_EQ(mean(x, {0}).to_vector(), (std::vector<double>{2.5, 3.5, 4.5}));
  EXPECT_EQ(mean(x, {0, 1}).item(), 3.5);
  EXPECT_EQ(mean(x, {1}, true).to_vector(), (std::vector<double>{2, 5}));
  // Non-contiguous input (transpose view) and a scalar.
  Tensor xt = x.as_strided({3, 2}, {1, 3}, 0);
  EXPECT_EQ(sum(xt, {1}).to_vector(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum(xt, {0}).to_vector(), (std::vector<double>{6, 15}));
  EXPECT_EQ(sum(Tensor::scalar(4.0)).item(), 4.0);
  EXPECT_EQ(mean(Tensor::scalar(4.0), {0}).item(), 4.0);
  // Empty reductions: sum 0, mean NaN (like PyTorch).
  EXPECT_EQ(sum(Tensor::ones({0, 3}), {0}).to_vector(), (std::vector<double>{0, 0, 0}));
  EXPECT_TRUE(std::isnan(mean(Tensor::ones({0})).item()));
}

TEST(Reduce, ReductionsOverEveryDimSet) {
  Tensor x = randn64({3, 4, 5}, 100);
  const std::vector<double> v = x.to_vector();
  // Reference by explicit loops.
  auto ref = [&](bool r0, bool r1, bool r2) {
    const int n0 = r0 ? 1 : 3, n1 = r1 ? 1 : 4, n2 = r2 ? 1 : 5;
    std::vector<double> out(n0 * n1 * n2, 0.0);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j)
        for (int k = 0; k < 5; ++k)
          out[((r0 ? 0 : i) * n1 + (r1 ? 0 : j)) * n2 + (r2 ? 0 : k)] += v[(i * 4 + j) * 5 + k];
    return out;
  };
  for (int mask = 1; mask < 8; ++mask) {
    std::vector<int64_t> dims;
    for (int d = 0; d < 3; ++d)
      if (mask & (1 << d)) dims.push_back(d);
    std::vector<double> r = ref(mask & 1, mask & 2, mask & 4);
    Tensor s = sum(x, dims, true);
    EXPECT_CLOSE(s, Tensor::from_vector(r, s.shape(), DType::F64), 1e-13, 1e-13);
    for (double& e : r) e /= (mask & 1 ? 3 : 1) * (mask & 2 ? 4 : 1) * (mask & 4 ? 5 : 1);
    Tensor m = mean(x, dims, false);
    EXPECT_CLOSE(m, Tensor::from_vector(r, m.shape(), DType::F64), 1e-13, 1e-13);
  }
}

TEST(Reduce, ReductionErrors) {
  Tensor x = Tensor::ones({2, 3});
  EXPECT_THROW(sum(x, {2}), Error);
  EXPECT_THROW(sum(x, {-3}), Error);
  try {
    mean(x, {1, -1});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mean"), std::string::npos) << e.what();
  }
}

TEST(Reduce, SumToShape) {
  Tensor g = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 2, 3});
  EXPECT_EQ(sum_to_shape(g, {3}).to_vector(), (std::vector<double>{22, 26, 30}));
  EXPECT_EQ(sum_to_shape(g, {2, 1}).to_vector(), (std::vector<double>{30, 48}));
  EXPECT_EQ(sum_to_shape(g, {2, 1}).shape(), (Shape{2, 1}));
  EXPECT_EQ(sum_to_shape(g, {2, 1, 1}).to_vector(), (std::vector<double>{21, 57}));
  EXPECT_EQ(sum_to_shape(g, {}).item(), 78.0);
  EXPECT_EQ(sum_to_shape(g, {1, 1, 3}).to_vector(), (std::vector<double>{22, 26, 30}));
  Tensor same = sum_to_shape(g, {2, 2, 3});
  EXPECT_FALSE(same.same(g));
  EXPECT_EQ(same.to_vector(), g.to_vector());
  EXPECT_THROW(sum_to_shape(g, {4}), Error);
  EXPECT_THROW(sum_to_shape(g, {1, 2, 2, 3}), Error);
  // Not recorded even when g requires grad.
  Tensor leaf = g.to(DType::F32).clone();
  set_requires_grad(leaf);
  EXPECT_FALSE(requires_grad(sum_to_shape(leaf, {3})));
}
