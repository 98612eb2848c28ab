// Elementwise ops on CUDA: dropout draws the same mask as the CPU (bit for bit), a cast round trip equals the CPU's,
// errors name the op. CUDA vs the CPU for every elementwise op: the op table.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "autograd/ops/elementwise.h"
#include "test_util.h"

using namespace mt;

namespace {

Device gpu() { return Device::cuda(0); }

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, 1.0, DType::F32);
}
Tensor rand(const Shape& s, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return Tensor::rand(s, g, lo, hi, DType::F32);
}

const int64_t kSizes[] = {1, 7, 257, 1000003};

}  // namespace

TEST(CudaElementwise, DropoutMaskMatchesCpu) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F64})
    for (int64_t n : kSizes) {
      Tensor x = rand({n}, 70, 0.5, 1.5).to(dt);
      Tensor xc = x.clone(), xg = x.to(gpu());
      set_requires_grad(xc);
      set_requires_grad(xg);
      Generator gc(99), gg(99);
      Tensor w = rand({n}, 71, 0.5, 1.5).to(dt);
      Tensor yc = dropout(xc, 0.3, true, gc);
      backward(yc, w);
      Tensor yg = dropout(xg, 0.3, true, gg);
      backward(yg, w.to(gpu()));
      EXPECT_EQ(gc.offset(), gg.offset());
      // Same mask, same float arithmetic: bit-identical.
      EXPECT_EQ(yg.to_vector(), yc.to_vector()) << dtype_name(dt) << " n=" << n;
      EXPECT_EQ(grad(xg).to_vector(), grad(xc).to_vector()) << dtype_name(dt) << " n=" << n;
    }
}

TEST(CudaElementwise, CastRoundTripMatchesTheCpuBitwise) {
  MT_REQUIRE_CUDA();
  Tensor x = randn({257}, 81);
  EXPECT_EQ(cast(cast(x.to(gpu()), DType::BF16), DType::F32).to_vector(),
            cast(cast(x, DType::BF16), DType::F32).to_vector());
}

TEST(CudaElementwise, ErrorsNameTheOp) {
  MT_REQUIRE_CUDA();
  Tensor a = Tensor::ones({3}, DType::F32, gpu()), b = Tensor::ones({3});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}
