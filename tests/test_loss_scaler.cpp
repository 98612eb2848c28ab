// Mixed-precision support: the dynamic loss scaler (optim/loss_scaler.h). The gradient checks it relies on are in
// tests/ops/test_grad_check.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/autograd.h"
#include "optim/loss_scaler.h"
#include "test_util.h"

using namespace mt;
using optim::DynamicLossScaler;
using optim::LossScalerState;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

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
