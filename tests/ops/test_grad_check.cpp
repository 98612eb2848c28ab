// The gradient health checks (optim/grad_check.h over kernels/grad_check.h): the inf / NaN check, the global gradient
// norm and the clip factor. These must hold in a Release build (host code is never built with -ffast-math).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/autograd.h"
#include "optim/adamw.h"
#include "optim/grad_check.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A set of f32 parameters, each with a gradient of the given values and dtype (or none when has_grad is false).
struct Params {
  std::vector<Tensor> ts;
  std::vector<Tensor*> ptrs() {
    std::vector<Tensor*> out;
    for (Tensor& t : ts) out.push_back(&t);
    return out;
  }
  void add(const std::vector<double>& g, DType gdt = DType::F32, bool has_grad = true) {
    Tensor p = Tensor::full({static_cast<int64_t>(g.size())}, 0.5, DType::F32);
    set_requires_grad(p);
    if (has_grad) set_grad(p, Tensor::from_vector(g, {static_cast<int64_t>(g.size())}, gdt));
    ts.push_back(p);
  }
};

}  // namespace

TEST(GradCheck, FindsInfMinusInfAndNaNInTheSecondTensor) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    for (double bad : {kInf, -kInf, kNaN}) {
      Params ps;
      ps.add({1.0, -2.0, 3.0}, dt);
      ps.add({0.25, bad, -0.5, 7.0}, dt);
      ps.add({4.0, 5.0}, dt);
      EXPECT_EQ(optim::first_nonfinite_grad(ps.ptrs()), 1) << dtype_name(dt) << " " << bad;
    }
  }
}

TEST(GradCheck, AllFiniteIsMinusOneAndParamsWithoutGradsAreIgnored) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    Params ps;
    ps.add({1.0, -2.0, 3.0}, dt);
    ps.add({kNaN, kNaN}, dt, /*has_grad=*/false);   // no gradient: skipped
    ps.add({65504.0, -65504.0, 6e-8, -1e-30}, dt);  // f16 max, tiny values (f16 flushes 1e-30 to -0): all finite
    EXPECT_EQ(optim::first_nonfinite_grad(ps.ptrs()), -1) << dtype_name(dt);
  }
  // The parameter data itself is never looked at, only its gradient.
  Params ps;
  ps.add({1.0, 2.0});
  ps.ts[0].fill_(kNaN);
  EXPECT_EQ(optim::first_nonfinite_grad(ps.ptrs()), -1);
  EXPECT_EQ(optim::first_nonfinite_grad({}), -1);
}

TEST(GradCheck, HealthNamesTheFirstBadGradientAndGivesTheNormsBits) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    for (double bad : {kInf, -kInf, kNaN}) {
      Params ps;
      ps.add({1.0, -2.0, 3.0}, dt);
      ps.add({1.0}, dt, /*has_grad=*/false);
      ps.add({0.25, bad, -0.5, 7.0}, dt);
      ps.add({kNaN}, dt);
      const optim::GradHealth h = optim::grad_health(ps.ptrs());
      EXPECT_EQ(h.first_bad, 2) << dtype_name(dt) << " " << bad;
      EXPECT_TRUE(std::isnan(h.norm)) << dtype_name(dt);
    }
    Params ok;
    ok.add({1.0, -2.0, 3.0}, dt);
    ok.add({65504.0, 6e-8}, dt);
    const optim::GradHealth h = optim::grad_health(ok.ptrs());
    EXPECT_EQ(h.first_bad, -1) << dtype_name(dt);
    const double norm = optim::grad_global_norm(ok.ptrs());
    EXPECT_EQ(std::memcmp(&h.norm, &norm, sizeof(double)), 0) << dtype_name(dt) << ": " << h.norm << " vs " << norm;
  }
  // Finite f64 gradients whose squares overflow: no gradient is bad, the norm is (-3).
  Params big;
  big.add({1e200, 2.0}, DType::F64);
  EXPECT_EQ(optim::first_nonfinite_grad(big.ptrs()), -1);
  EXPECT_EQ(optim::grad_health(big.ptrs()).first_bad, -3);
  // The largest f32 gradients stay finite in the sum.
  Params f32max;
  f32max.add(std::vector<double>(1000, 3.4e38), DType::F32);
  EXPECT_EQ(optim::grad_health(f32max.ptrs()).first_bad, -1);
  EXPECT_EQ(optim::grad_health({}).first_bad, -1);
  EXPECT_EQ(optim::grad_health({}).norm, 0.0);
}

TEST(GradCheck, FirstOfSeveralAndSkippedParamsKeepTheirIndex) {
  Params ps;
  ps.add({1.0}, DType::F32, /*has_grad=*/false);
  ps.add({1.0, 2.0});
  ps.add({1.0, 2.0}, DType::F32, /*has_grad=*/false);
  ps.add({1.0, kInf});
  ps.add({kNaN, 2.0});
  EXPECT_EQ(optim::first_nonfinite_grad(ps.ptrs()), 3);
}

TEST(GradCheck, Fp16OverflowBecomesInfAndIsFound) {
  // 1e5 does not fit f16 (max 65504): the conversion gives inf, exactly what an fp16 backward overflow stores.
  Params ps;
  ps.add({1.0, 2.0}, DType::F16);
  ps.add({1e5, 2.0}, DType::F16);
  EXPECT_EQ(optim::first_nonfinite_grad(ps.ptrs()), 1);
}

TEST(GradCheck, NonContiguousGradientAndRuntimeNaN) {
  // A NaN made at run time (0 * inf, not a constant the compiler could see) in a transposed gradient view.
  volatile double zero = 0.0;
  const double runtime_nan = zero * kInf;
  ASSERT_TRUE(std::isnan(runtime_nan));
  Tensor p = Tensor::zeros({2, 3});
  set_requires_grad(p);
  Tensor g = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  store_from_double(g.data_ptr(), DType::F32, 5, runtime_nan);
  set_grad(p, g.as_strided({2, 3}, {1, 2}, 0));
  EXPECT_EQ(optim::first_nonfinite_grad({&p}), 0);
  EXPECT_TRUE(std::isnan(optim::grad_global_norm({&p})));
}

TEST(GradCheck, RejectsIntegerGradientsAndNullParams) {
  Tensor p = Tensor::zeros({2});
  set_requires_grad(p);
  set_grad(p, Tensor::from_vector_i64({1, 2}, {2}));
  EXPECT_THROW(optim::first_nonfinite_grad({&p}), Error);
  EXPECT_THROW(optim::grad_global_norm({nullptr}), Error);
}

TEST(GradNorm, MatchesAHandSum) {
  Params ps;
  ps.add({3.0, 4.0});
  ps.add({5.0}, DType::F32, /*has_grad=*/false);
  ps.add({12.0});
  EXPECT_EQ(optim::grad_global_norm(ps.ptrs()), 13.0);  // sqrt(9 + 16 + 144)
  EXPECT_EQ(optim::global_grad_norm(ps.ptrs()), 13.0);  // the old entry point forwards to the new one
  EXPECT_EQ(optim::grad_global_norm({}), 0.0);

  Generator gen(7);
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    Params rs;
    double hand = 0;
    for (int64_t n : {1, 7, 257, 1000}) {
      Tensor g = Tensor::randn({n}, gen, 0.0, 2.0, dt);
      Tensor p = Tensor::zeros({n});
      set_requires_grad(p);
      set_grad(p, g);
      rs.ts.push_back(p);
      for (double v : g.to_vector()) hand += v * v;
    }
    EXPECT_NEAR(optim::grad_global_norm(rs.ptrs()), std::sqrt(hand), 1e-12 * std::sqrt(hand)) << dtype_name(dt);
  }
}

TEST(GradNorm, IsNaNOrInfWhenOneElementIs) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    Params a;
    a.add({1.0, 2.0});
    a.add({3.0, kInf, 4.0}, dt);
    EXPECT_EQ(optim::grad_global_norm(a.ptrs()), kInf) << dtype_name(dt);
    Params b;
    b.add({1.0, 2.0});
    b.add({3.0, -kInf}, dt);
    EXPECT_EQ(optim::grad_global_norm(b.ptrs()), kInf) << dtype_name(dt);
    Params c;
    c.add({1.0, kNaN}, dt);
    c.add({3.0, 4.0});
    EXPECT_TRUE(std::isnan(optim::grad_global_norm(c.ptrs()))) << dtype_name(dt);
    Params d;  // NaN and inf together: never a finite number
    d.add({kInf}, dt);
    d.add({kNaN}, dt);
    EXPECT_FALSE(std::isfinite(optim::grad_global_norm(d.ptrs()))) << dtype_name(dt);
  }
  // Large finite f32 values do not overflow: the squares are accumulated in double.
  Params big;
  big.add({3e38, 3e38});
  const double n = optim::grad_global_norm(big.ptrs());
  EXPECT_TRUE(std::isfinite(n));
  EXPECT_NEAR(n, std::sqrt(2.0) * static_cast<double>(3e38f), 1e25);
}

TEST(ClipFactor, ScalesDownOnlyAboveTheMaxAndRefusesNonFiniteNorms) {
  EXPECT_DOUBLE_EQ(optim::clip_factor(10.0, 1.0), 0.1);
  EXPECT_EQ(optim::clip_factor(0.5, 1.0), 1.0);
  EXPECT_EQ(optim::clip_factor(1.0, 1.0), 1.0);
  EXPECT_EQ(optim::clip_factor(0.0, 1.0), 1.0);
  EXPECT_EQ(optim::clip_factor(5.0, 0.0), 1.0);   // clipping off
  EXPECT_EQ(optim::clip_factor(5.0, -1.0), 1.0);  // clipping off
  EXPECT_EQ(optim::clip_factor(5.0, kNaN), 1.0);  // clipping off
  // A NaN norm would pass `norm > max` unnoticed (the comparison is false): clip_factor says NaN = skip the step,
  // also when clipping is off.
  EXPECT_TRUE(std::isnan(optim::clip_factor(kNaN, 1.0)));
  EXPECT_TRUE(std::isnan(optim::clip_factor(kInf, 1.0)));
  EXPECT_TRUE(std::isnan(optim::clip_factor(kNaN, 0.0)));
  EXPECT_TRUE(std::isnan(optim::clip_factor(kInf, 0.0)));
}

TEST(ClipFactor, EndToEndWithTheNormOfRealGradients) {
  Params ps;
  ps.add({30.0, 40.0});  // norm 50
  const double norm = optim::grad_global_norm(ps.ptrs());
  EXPECT_EQ(norm, 50.0);
  EXPECT_DOUBLE_EQ(optim::clip_factor(norm, 1.0) * norm, 1.0);
}
