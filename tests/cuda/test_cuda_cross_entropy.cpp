// cross_entropy on CUDA: a bad target is found on the device and named; every row ignored gives a zero loss and
// gradient (CUDA vs the CPU: the op table).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/ops/cross_entropy.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

Tensor randn32(const Shape& s, uint64_t seed, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F32);
}

}  // namespace

TEST(CudaCrossEntropy, BadTargetIsADataErrorNamingIt) {
  MT_REQUIRE_CUDA();
  Tensor x = Tensor::zeros({4, 50280}, DType::BF16, Device::cuda());
  try {
    cross_entropy(x, Tensor::from_vector_i64({0, 50280, 3, -7}, {4}, DType::I32, Device::cuda()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("target 50280"), std::string::npos) << m;
    EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  }
}

TEST(CudaCrossEntropy, EveryRowIgnoredIsZero) {
  MT_REQUIRE_CUDA();
  // Every row ignored: loss 0, gradient 0.
  Tensor x = randn32({3, 11}, 6).to(Device::cuda()).clone();
  set_requires_grad(x);
  Tensor l = cross_entropy(
      x, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}, DType::I64, Device::cuda()));
  EXPECT_EQ(l.item(), 0.0);
  backward(l);
  EXPECT_EQ(grad(x).to_vector(), std::vector<double>(33, 0.0));
}
