// linear_cross_entropy on CUDA: bf16 tracks the unfused pair, every row ignored gives zeros, two runs give the same
// bits, bad targets are named (CUDA vs the CPU: the op table).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

Tensor randn32(const Shape& s, uint64_t seed, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F32);
}

// Targets in [0, C) with every 5th row ignored (kIgnoreIndex).
Tensor targets_with_ignored(int64_t N, int64_t C, uint64_t seed, DType dt = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> t = Tensor::randint({N}, g, 0, C).to_vector_i64();
  for (int64_t i = 0; i < N; i += 5) t[i] = kIgnoreIndex;
  return Tensor::from_vector_i64(t, {N}, dt);
}

}  // namespace

TEST(CudaLinearCrossEntropy, Bf16TracksTheUnfusedPairAndAllIgnoredIsZero) {
  MT_REQUIRE_CUDA();
  // bf16 through the fused op tracks the unfused linear + cross_entropy in bf16 (both round logits to bf16).
  Tensor h = randn32({29, 48}, 9).to(DType::BF16).to(Device::cuda()),
         w = randn32({1000, 48}, 10, 0.3).to(DType::BF16).to(Device::cuda());
  Tensor t = targets_with_ignored(29, 1000, 11).to(Device::cuda());
  const double fused = linear_cross_entropy(h, w, t, kIgnoreIndex, 7).item(),
               plain = cross_entropy(linear(h, w), t).item();
  EXPECT_NEAR(fused, plain, 1e-2 * std::fabs(plain));
  // Every row ignored: loss 0, zero gradients.
  Tensor hz = randn32({3, 8}, 12).to(Device::cuda()).clone(), wz = randn32({11, 8}, 13).to(Device::cuda()).clone();
  set_requires_grad(hz);
  set_requires_grad(wz);
  Tensor l = linear_cross_entropy(
      hz, wz, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}, DType::I64, Device::cuda()));
  EXPECT_EQ(l.item(), 0.0);
  backward(l);
  EXPECT_EQ(grad(hz).to_vector(), std::vector<double>(24, 0.0));
  EXPECT_EQ(grad(wz).to_vector(), std::vector<double>(88, 0.0));
}

TEST(CudaLinearCrossEntropy, IsReproducibleAndNamesBadTargets) {
  MT_REQUIRE_CUDA();
  Tensor h = randn32({300, 64}, 1).to(DType::BF16).to(Device::cuda()),
         w = randn32({5003, 64}, 2, 0.2).to(DType::BF16).to(Device::cuda());
  Tensor t = targets_with_ignored(300, 5003, 3).to(Device::cuda());
  auto run = [&] {
    Tensor hh = h.clone(), ww = w.clone();
    set_requires_grad(hh);
    set_requires_grad(ww);
    Tensor l = linear_cross_entropy(hh, ww, t, kIgnoreIndex, 64);
    backward(l);
    return std::make_tuple(l.item(), grad(hh).to_vector(), grad(ww).to_vector());
  };
  auto a = run(), b = run();
  EXPECT_EQ(std::get<0>(a), std::get<0>(b));
  EXPECT_EQ(std::get<1>(a), std::get<1>(b));
  EXPECT_EQ(std::get<2>(a), std::get<2>(b));
  try {
    linear_cross_entropy(h, w, Tensor::from_vector_i64({0, 5003, 3}, {3}, DType::I32, Device::cuda()), kIgnoreIndex, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    // h has 300 rows and targets 3: a shape error first.
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
  }
  try {
    std::vector<int64_t> tv = t.to_vector_i64();
    tv[17] = 5003;
    linear_cross_entropy(h, w, Tensor::from_vector_i64(tv, {300}, DType::I64, Device::cuda()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("target 5003"), std::string::npos) << m;
    EXPECT_NE(m.find("row 17"), std::string::npos) << m;
  }
}
