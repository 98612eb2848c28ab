// masked_pool (autograd/ops/pool.h): mean / max / last against hand-computed values, the backward's routing, masks
// of any dtype, a row with no real token, 16-bit inputs, and the errors. Gradcheck and CUDA: the op table.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/ops/pool.h"
#include "tests/test_util.h"

using namespace mt;
using kernels::PoolMode;

namespace {

// x [2, 4, 2]: x[b, t, d] = 10 b + t + (d ? 0.5 : 0), except x[0, 1, 1] = 9 (a max at a masked position) and
// x[0, 2, 0] = 7 (the max of row 0, channel 0).
Tensor sample_x() {
  std::vector<double> v;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 4; ++t)
      for (int d = 0; d < 2; ++d) v.push_back(10.0 * b + t + (d ? 0.5 : 0.0));
  v[(0 * 4 + 1) * 2 + 1] = 9.0;
  v[(0 * 4 + 2) * 2 + 0] = 7.0;
  return Tensor::from_vector(v, {2, 4, 2}, DType::F64);
}

// Row 0: steps 0, 2, 3 real (step 1 padded); row 1: no real token.
Tensor sample_mask() { return Tensor::from_vector_i64({1, 0, 1, 1, 0, 0, 0, 0}, {2, 4}); }

struct PoolRun {
  std::vector<double> out, dx;
};

PoolRun run(PoolMode mode, const Tensor& mask) {
  Tensor x = sample_x();
  set_requires_grad(x);
  Tensor y = masked_pool(x, mask, mode);
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  backward(y, Tensor::from_vector({1, 2, 3, 4}, {2, 2}, DType::F64));
  return {y.to_vector(), grad(x).to_vector()};
}

}  // namespace

TEST(Pool, MeanOverRealStepsAndZeroForAnEmptyRow) {
  const PoolRun r = run(PoolMode::Mean, sample_mask());
  // Row 0: steps 0, 2, 3 -> d0 (0 + 7 + 3) / 3, d1 (0.5 + 2.5 + 3.5) / 3.
  EXPECT_EQ(r.out, (std::vector<double>{10.0 / 3, 6.5 / 3, 0, 0}));
  // The gradient splits evenly over the real steps of row 0; row 1 and the padded step get none.
  const double a = 1.0 / 3, b = 2.0 / 3;
  EXPECT_EQ(r.dx, (std::vector<double>{a, b, 0, 0, a, b, a, b, 0, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(Pool, MaxIgnoresPaddedStepsAndRoutesTheGradientToTheArgmax) {
  const PoolRun r = run(PoolMode::Max, sample_mask());
  EXPECT_EQ(r.out, (std::vector<double>{7.0, 3.5, 0, 0}));  // 9 at the padded step 1 does not count
  std::vector<double> dx(16, 0.0);
  dx[(0 * 4 + 2) * 2 + 0] = 1;  // row 0, channel 0: step 2
  dx[(0 * 4 + 3) * 2 + 1] = 2;  // row 0, channel 1: step 3
  EXPECT_EQ(r.dx, dx);
}

TEST(Pool, LastTakesTheLastRealStep) {
  const PoolRun r = run(PoolMode::Last, Tensor::from_vector({1, 1, 1, 0, 1, 1, 0, 0}, {2, 4}, DType::F32));
  EXPECT_EQ(r.out, (std::vector<double>{7.0, 2.5, 11.0, 11.5}));  // row 0: step 2, row 1: step 1
  std::vector<double> dx(16, 0.0);
  dx[(0 * 4 + 2) * 2 + 0] = 1, dx[(0 * 4 + 2) * 2 + 1] = 2;
  dx[(1 * 4 + 1) * 2 + 0] = 3, dx[(1 * 4 + 1) * 2 + 1] = 4;
  EXPECT_EQ(r.dx, dx);
}

TEST(Pool, NoMaskMeansEveryStepIsReal) {
  const PoolRun last = run(PoolMode::Last, Tensor());
  EXPECT_EQ(last.out, (std::vector<double>{3.0, 3.5, 13.0, 13.5}));
  const PoolRun mean = run(PoolMode::Mean, Tensor());
  EXPECT_EQ(mean.out, (std::vector<double>{(0 + 1 + 7 + 3) / 4.0, (0.5 + 9 + 2.5 + 3.5) / 4.0, 11.5, 12.0}));
}

TEST(Pool, HalfInputsPoolInF32AndRoundOnce) {
  for (DType dt : {DType::BF16, DType::F16})
    for (PoolMode mode : {PoolMode::Mean, PoolMode::Max, PoolMode::Last}) {
      const Tensor x = sample_x().to(dt), mask = sample_mask();
      const Tensor y = masked_pool(x, mask, mode);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(y.to_vector(), masked_pool(x.to(DType::F32), mask, mode).to(dt).to_vector()) << dtype_name(dt);
    }
}

TEST(Pool, Errors) {
  EXPECT_NE(test::error_of([] {
              masked_pool(Tensor::zeros({2, 4}), Tensor(), PoolMode::Mean);
            }).find("masked_pool"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              masked_pool(Tensor::zeros({2, 4, 3}), Tensor::ones({2, 3}), PoolMode::Mean);
            }).find("mask"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              masked_pool(Tensor::zeros({2, 4, 3}, DType::I64), Tensor(), PoolMode::Max);
            }).find("float"),
            std::string::npos);
  EXPECT_EQ(pool_mode_from_name("max"), PoolMode::Max);
  try {
    pool_mode_from_name("median");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_NE(std::string(e.what()).find("median"), std::string::npos) << e.what();
  }
}
