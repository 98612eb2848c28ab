// Learning-rate schedules (optim/schedule.h) on hand-computed values: warmup, cosine, linear, constant.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/schedule.h"

using namespace mt::optim;

TEST(Schedule, WarmupThenEachShape) {
  ScheduleOptions s;
  s.peak_lr = 1.0;
  s.min_lr = 0.1;
  s.warmup_steps = 4;
  s.total_steps = 14;  // 10 steps after the warmup
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(lr_at(s, 3), 1.0);
  s.kind = ScheduleKind::Cosine;
  EXPECT_DOUBLE_EQ(lr_at(s, 4), 1.0);
  EXPECT_NEAR(lr_at(s, 9), 0.55, 1e-15);  // half-way: (peak + min) / 2
  EXPECT_NEAR(lr_at(s, 14), 0.1, 1e-15);
  EXPECT_NEAR(lr_at(s, 100), 0.1, 1e-15);  // past the end: the floor
  s.kind = ScheduleKind::Linear;
  EXPECT_NEAR(lr_at(s, 9), 0.55, 1e-15);
  EXPECT_NEAR(lr_at(s, 6), 1.0 - 0.9 * 0.2, 1e-15);
  s.kind = ScheduleKind::Constant;
  EXPECT_DOUBLE_EQ(lr_at(s, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 2), 0.75);  // the warmup applies to every shape
}

TEST(Schedule, ParsesTheConfigSpellings) {
  ScheduleKind k = ScheduleKind::Constant;
  EXPECT_TRUE(parse_schedule_kind("cosine", &k));
  EXPECT_EQ(k, ScheduleKind::Cosine);
  EXPECT_TRUE(parse_schedule_kind("linear", &k));
  EXPECT_EQ(k, ScheduleKind::Linear);
  EXPECT_TRUE(parse_schedule_kind("constant", &k));
  EXPECT_EQ(k, ScheduleKind::Constant);
  EXPECT_FALSE(parse_schedule_kind("Cosine", &k));
  EXPECT_EQ(k, ScheduleKind::Constant);
}
