// Mixed-precision support: the dynamic loss scaler, the inf/NaN gradient check, the global gradient norm and the
// clip factor (optim/loss_scaler.h, optim/grad_check.h). These must hold in a Release build (docs/DESIGN.md F7).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/autograd.h"
#include "optim/adamw.h"
#include "optim/grad_check.h"
#include "optim/loss_scaler.h"
#include "test_util.h"

using namespace mt;
using optim::DynamicLossScaler;
using optim::LossScalerState;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A set of f32 parameters, each with a gradient of the given values and dtype (or none when grads[i] is empty
// and has_grad[i] is false).
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

bool same_state(const LossScalerState& a, const LossScalerState& b) {
  return a.scale == b.scale && a.good_steps == b.good_steps && a.skipped_total == b.skipped_total &&
         a.nonfinite_streak == b.nonfinite_streak;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// DynamicLossScaler

TEST(LossScaler, StartsAt65536AndGrowsExactlyAtStep2000) {
  DynamicLossScaler s;
  EXPECT_TRUE(s.enabled());
  EXPECT_EQ(s.scale(), 65536.0);
  for (int i = 1; i < 2000; ++i) {
    s.update(true);
    ASSERT_EQ(s.scale(), 65536.0) << "grew early, after " << i << " finite steps";
  }
  EXPECT_EQ(s.state().good_steps, 1999);
  s.update(true);  // step 2000
  EXPECT_EQ(s.scale(), 131072.0);
  EXPECT_EQ(s.state().good_steps, 0);
  for (int i = 0; i < 2000; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 262144.0);
  EXPECT_EQ(s.state().skipped_total, 0);
}

TEST(LossScaler, OverflowHalvesResetsGoodStepsAndCountsTheSkip) {
  DynamicLossScaler s;
  for (int i = 0; i < 1500; ++i) s.update(true);
  s.update(false);
  EXPECT_EQ(s.scale(), 32768.0);
  EXPECT_EQ(s.state().good_steps, 0);
  EXPECT_EQ(s.state().skipped_total, 1);
  EXPECT_EQ(s.state().nonfinite_streak, 1);
  s.update(false);
  EXPECT_EQ(s.scale(), 16384.0);
  EXPECT_EQ(s.state().skipped_total, 2);
  EXPECT_EQ(s.state().nonfinite_streak, 2);
  s.update(true);  // the streak resets on a finite step, the total does not
  EXPECT_EQ(s.state().nonfinite_streak, 0);
  EXPECT_EQ(s.state().skipped_total, 2);
  EXPECT_EQ(s.state().good_steps, 1);
  EXPECT_EQ(s.scale(), 16384.0);
  // The 1500 finite steps before the overflow do not count towards the next growth: 2000 new ones are needed.
  for (int i = 0; i < 1998; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 16384.0);
  s.update(true);
  EXPECT_EQ(s.scale(), 32768.0);
}

TEST(LossScaler, NeverFallsBelowTheFloor) {
  EXPECT_EQ(DynamicLossScaler::kMinScale, std::ldexp(1.0, -24));
  DynamicLossScaler s(std::ldexp(1.0, -23));
  s.update(false);
  EXPECT_EQ(s.scale(), std::ldexp(1.0, -24));
  s.update(false);
  EXPECT_EQ(s.scale(), std::ldexp(1.0, -24));
  DynamicLossScaler t;  // a persistent NaN: thousands of overflows in a row
  for (int i = 0; i < 5000; ++i) t.update(false);
  EXPECT_EQ(t.scale(), DynamicLossScaler::kMinScale);
  EXPECT_GT(t.scale(), 0.0);
  EXPECT_TRUE(std::isfinite(1.0 / t.scale()));
  EXPECT_EQ(t.state().nonfinite_streak, 5000);
  EXPECT_EQ(t.state().skipped_total, 5000);
  // and recovers from the floor by growth
  for (int i = 0; i < 2000; ++i) t.update(true);
  EXPECT_EQ(t.scale(), std::ldexp(1.0, -23));
}

TEST(LossScaler, CustomIntervalAndFactors) {
  DynamicLossScaler s(1024.0, 3, 4.0, 0.25);
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 1024.0);
  s.update(true);
  EXPECT_EQ(s.scale(), 4096.0);
  s.update(false);
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.growth_interval(), 3);
}

TEST(LossScaler, DisabledIsOneAndNeverChanges) {
  DynamicLossScaler s(65536.0, 2000, 2.0, 0.5, /*enabled=*/false);
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_EQ(s.state().scale, 1.0);
  for (int i = 0; i < 4500; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 1.0);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 1.0);
  // Skips and the streak are still counted: the non-finite stop rule applies to bf16 / f32 runs too.
  EXPECT_EQ(s.state().skipped_total, 2);
  EXPECT_EQ(s.state().nonfinite_streak, 2);
  EXPECT_EQ(s.state().good_steps, 0);
  s.update(true);
  EXPECT_EQ(s.state().nonfinite_streak, 0);
  LossScalerState st;
  st.scale = 1024;
  st.good_steps = 7;
  st.skipped_total = 3;
  s.set_state(st);
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_EQ(s.state().skipped_total, 3);
}

TEST(LossScaler, SaveAndRestoreContinuesIdentically) {
  // A deterministic pattern of finite / overflow steps; overflow every 2501st step and a burst around 4000.
  auto finite_at = [](int i) { return i % 2501 != 2500 && !(i >= 4000 && i < 4004); };
  DynamicLossScaler a;
  DynamicLossScaler b(1.0, 2000);  // deliberately different initial scale: set_state must override it
  const int split = 3100;
  for (int i = 0; i < split; ++i) a.update(finite_at(i));
  const LossScalerState saved = a.state();
  b.set_state(saved);
  EXPECT_TRUE(same_state(b.state(), saved));
  EXPECT_EQ(b.scale(), a.scale());
  for (int i = split; i < 9000; ++i) {
    a.update(finite_at(i));
    b.update(finite_at(i));
    ASSERT_TRUE(same_state(a.state(), b.state())) << "diverged at step " << i;
  }
  EXPECT_EQ(a.state().skipped_total, 3 + 4);  // 2500, 5001, 7502 and the 4-step burst
  EXPECT_GT(a.scale(), 1.0);
}

TEST(LossScaler, RejectsBadOptionsAndStates) {
  auto kind = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::Internal;
  };
  EXPECT_EQ(kind([] { DynamicLossScaler s(0.0); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(kNaN); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(kInf); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(65536.0, 0); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(65536.0, 2000, 0.5); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(65536.0, 2000, 2.0, 1.0); }), ErrorKind::Config);
  EXPECT_EQ(kind([] { DynamicLossScaler s(65536.0, 2000, 2.0, 0.0); }), ErrorKind::Config);
  DynamicLossScaler s;
  LossScalerState bad;
  bad.scale = kNaN;
  EXPECT_EQ(kind([&] { s.set_state(bad); }), ErrorKind::Checkpoint);
  bad.scale = 0.0;
  EXPECT_EQ(kind([&] { s.set_state(bad); }), ErrorKind::Checkpoint);
  bad.scale = 8.0;
  bad.skipped_total = -1;
  EXPECT_EQ(kind([&] { s.set_state(bad); }), ErrorKind::Checkpoint);
  EXPECT_EQ(s.scale(), 65536.0);  // a rejected state changes nothing
}

// ---------------------------------------------------------------------------------------------------------------
// first_nonfinite_grad

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

// ---------------------------------------------------------------------------------------------------------------
// grad_global_norm

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

// ---------------------------------------------------------------------------------------------------------------
// clip_factor

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
