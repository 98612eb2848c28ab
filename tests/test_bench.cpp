// bench --breakdown: the op timer (core/op_timer.h), the classes of train/op_breakdown.h and the printed table.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/ops/gemm.h"
#include "core/op_timer.h"
#include "test_util.h"
#include "tests/cli_util.h"
#include "train/op_breakdown.h"

using namespace mt;
using namespace mt::train;

namespace {

struct CountingTimer : OpTimer {
  std::vector<std::string> begun;
  int ended = 0;
  void begin(const char* op, bool) override { begun.push_back(op); }
  void end(const char*, bool) override { ++ended; }
};

}  // namespace

TEST(OpTimer, OnlyTheOutermostCallIsTimedAndNothingWithoutATimer) {
  CountingTimer t;
  { const OpTimeScope s("not timed", false); }  // no timer installed yet
  set_op_timer(&t);
  {
    const OpTimeScope outer("outer", false);
    const OpTimeScope inner("inner", false);
  }
  { const OpTimeScope next("next", true); }
  set_op_timer(nullptr);
  EXPECT_EQ(t.begun, (std::vector<std::string>{"outer", "next"}));
  EXPECT_EQ(t.ended, 2);
}

TEST(OpBreakdown, TimesTheOpsKernelCallsByName) {
  std::map<std::string, double> ms;
  {
    OpBreakdown b(Device::cpu());
    EXPECT_EQ(op_timer(), &b);
    const Tensor x = test::randn64({64, 64}, 1), w = test::randn64({64, 64}, 2);
    for (int i = 0; i < 3; ++i) matmul(x, w);
    ms = b.collect();
    EXPECT_TRUE(b.collect().empty()) << "collect starts the next count from zero";
  }
  EXPECT_EQ(op_timer(), nullptr);
  ASSERT_EQ(ms.count("matmul"), 1u);
  EXPECT_GT(ms["matmul"], 0.0);
}

TEST(OpBreakdown, ClassesAndTheRestAddUpToTheStep) {
  const std::map<std::string, double> op_ms = {{"matmul", 5},
                                               {"selective_scan", 3},
                                               {"causal_conv1d", 1},
                                               {"rms_norm", 0.5},
                                               {"adamw", 0.25},
                                               {"grad_global_norm", 0.25},
                                               {"linear_cross_entropy", 2},
                                               {"mul", 0.5},
                                               {"embedding", 0.5},
                                               {"tensor_copy f32[8, 2048, 1536] strided", 0.5},
                                               {"tensor_cast bf16 -> f32[768, 3072]", 0.125},
                                               {"tensor_cast f32 -> bf16[16]", 0.125},
                                               {"tensor_fill f32[4]", 0.25}};
  const std::vector<BreakdownRow> rows = breakdown_table(op_ms, 20);
  std::map<std::string, double> by;
  double sum = 0;
  for (const BreakdownRow& r : rows) {
    by[r.name] = r.ms;
    sum += r.ms;
  }
  EXPECT_EQ(rows.front().name, "GEMMs");
  EXPECT_DOUBLE_EQ(by["optimizer"], 0.5);
  EXPECT_DOUBLE_EQ(by["norms"], 0.5);
  EXPECT_DOUBLE_EQ(by["LM head + loss"], 2);
  EXPECT_DOUBLE_EQ(by["elementwise, reductions, embedding, pooling"], 1);
  EXPECT_DOUBLE_EQ(by["tensor copies outside the ops"], 0.5);
  EXPECT_DOUBLE_EQ(by["dtype casts outside the ops"], 0.25);
  EXPECT_DOUBLE_EQ(by["fills outside the ops"], 0.25);
  EXPECT_EQ(rows.back().name, "launch gaps and host work");
  EXPECT_DOUBLE_EQ(rows.back().ms, 6);  // 20 - 14
  EXPECT_DOUBLE_EQ(sum, 20);
  EXPECT_DOUBLE_EQ(breakdown_table(op_ms, 10).back().ms, 0.0) << "the rest is never negative";
}

TEST(BenchCli, BreakdownPrintsClassesThatSumToTheStep) {
  const test::CliResult r =
      test::run_cli("bench configs/selective_copying.yaml --steps 2 --warmup 1 --breakdown --set run.device=cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t at = r.out.find("breakdown: mean of 2 steps");
  ASSERT_NE(at, std::string::npos) << r.out;
  double step_ms = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str() + r.out.find("wall clock), ", at), "wall clock), %lf ms per step", &step_ms), 1)
      << r.out;
  std::istringstream lines(r.out.substr(r.out.find('\n', r.out.find("ms/step", at)) + 1));
  std::string line;
  double sum = 0;
  std::map<std::string, double> rows;
  while (std::getline(lines, line) && line.rfind("  ", 0) == 0) {
    const std::string name = line.substr(2, 52);
    double ms = 0, pct = 0;
    ASSERT_EQ(std::sscanf(line.c_str() + 54, "%lf %lf", &ms, &pct), 2) << line;
    rows[name.substr(0, name.find_last_not_of(' ') + 1)] = ms;
    sum += ms;
  }
  EXPECT_GT(rows["selective scan"], 0.0) << r.out;
  EXPECT_GT(rows["GEMMs"], 0.0) << r.out;
  EXPECT_GT(rows["optimizer"], 0.0) << r.out;
  EXPECT_NEAR(sum, step_ms, 0.001 * static_cast<double>(rows.size()) + 1e-9) << r.out;

  // Then the largest copies / casts / fills outside the ops, each named by kind, dtype and shape; together no more
  // than their classes' rows.
  const size_t list = r.out.find("largest copies / casts / fills outside the ops", at);
  ASSERT_NE(list, std::string::npos) << r.out;
  std::istringstream listed(r.out.substr(r.out.find('\n', list) + 1));
  double listed_ms = 0;
  int n = 0;
  while (std::getline(listed, line) && line.rfind("  ", 0) == 0) {
    double ms = 0, calls = 0;
    char kind[32] = {};
    ASSERT_EQ(std::sscanf(line.c_str(), "%lf %lf %31s", &ms, &calls, kind), 3) << line;
    EXPECT_TRUE(std::string(kind) == "tensor_copy" || std::string(kind) == "tensor_cast" ||
                std::string(kind) == "tensor_fill")
        << line;
    EXPECT_NE(line.find('['), std::string::npos) << "names its shape: " << line;
    EXPECT_GT(calls, 0.0) << line;
    listed_ms += ms;
    ++n;
  }
  EXPECT_GT(n, 0) << r.out;
  const double outside =
      rows["tensor copies outside the ops"] + rows["dtype casts outside the ops"] + rows["fills outside the ops"];
  EXPECT_LE(listed_ms, outside + 0.001 * n + 1e-9) << r.out;
}
