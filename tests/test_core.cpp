#include <gtest/gtest.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace mt;

TEST(Core, DTypeRoundTrips) {
  for (float v : {0.0f, 1.0f, -2.5f, 3.14159f, 65504.0f, 1e-5f, 6e-8f, -1e-7f}) {
    EXPECT_NEAR(f16_to_float(float_to_f16(v)), v, std::fabs(v) * 1e-3 + 6e-8) << v;
    EXPECT_NEAR(bf16_to_float(float_to_bf16(v)), v, std::fabs(v) * 8e-3) << v;
  }
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
  // Round to nearest even: 1 + 2^-8 lies halfway between two bf16 values and rounds to 1.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + 1.0f / 2048)), 1.0f);
}

TEST(Core, ShapesViewsAndStridedCopy) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  EXPECT_TRUE(t.is_contiguous());
  Tensor tt = t.as_strided({3, 2}, {1, 3}, 0);  // transpose view
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.contiguous().to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(t.view({3, -1}).shape(), (Shape{3, 2}));
  EXPECT_THROW(tt.view({6}), Error);
  Tensor h = t.to(DType::BF16).to(DType::F64);
  EXPECT_EQ(h.to_vector(), t.to_vector());
  Tensor z = Tensor::zeros({4}, DType::I32);
  z.fill_(7);
  EXPECT_EQ(z.to_vector_i64(), (std::vector<int64_t>{7, 7, 7, 7}));
}

TEST(Core, PhiloxIsDeterministicAndUniform) {
  Generator g1(42), g2(42);
  Tensor a = Tensor::rand({1000}, g1), b = Tensor::rand({1000}, g2);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  Tensor c = Tensor::rand({1000}, g1);
  EXPECT_NE(a.to_vector(), c.to_vector());  // the generator advanced
  double mean = 0;
  for (double v : a.to_vector()) {
    EXPECT_GE(v, 0.0);
    EXPECT_LT(v, 1.0);
    mean += v / 1000;
  }
  EXPECT_NEAR(mean, 0.5, 0.05);
  // State save / restore reproduces the stream.
  GeneratorState s = g1.state();
  Tensor d = Tensor::randn({64}, g1);
  g1.set_state(s);
  EXPECT_EQ(Tensor::randn({64}, g1).to_vector(), d.to_vector());
  Tensor n = Tensor::randn({20000}, g2, 0.0, 2.0, DType::F64);
  double m = 0, v = 0;
  for (double x : n.to_vector()) m += x / 20000;
  for (double x : n.to_vector()) v += (x - m) * (x - m) / 20000;
  EXPECT_NEAR(m, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(v), 2.0, 0.05);
  Tensor ri = Tensor::randint({5000}, g2, 3, 9);
  for (int64_t x : ri.to_vector_i64()) {
    EXPECT_GE(x, 3);
    EXPECT_LT(x, 9);
  }
}

TEST(Core, ErrorsNameTheProblem) {
  try {
    Tensor::from_vector({1, 2, 3}, {2, 2});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
    EXPECT_NE(std::string(e.what()).find("[2, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_EQ(Device::parse("cuda:1").index, 1);
}
