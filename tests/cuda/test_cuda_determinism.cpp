// run.deterministic on the GPU: two runs of the same config end with the same parameters bit for bit, and a run
// stopped and resumed from its checkpoint ends where the uninterrupted one does (mixed precision, embedding
// backward on its sorted path).
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "tests/cli_util.h"
#include "train/ckpt/checkpoint.h"

using namespace mt;
using namespace mt::train;

namespace {

const std::string kRun =
    "train configs/selective_copying.yaml --set run.device=cuda --set run.deterministic=true "
    "--set trainer.precision=bf16 --set trainer.max_steps=8 --set trainer.eval_every=0 --set trainer.log_every=1 "
    "--set logging.progress=false --set logging.plot=false --set scheduler.warmup_steps=2 ";

std::map<std::string, std::vector<double>> final_params(const std::string& dir) {
  std::map<std::string, std::vector<double>> out;
  const std::string ck = latest_checkpoint(dir + "/checkpoints");
  EXPECT_NE(ck, "") << dir;
  if (ck.empty()) return out;
  for (auto& kv : load_checkpoint(ck).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first] = kv.second.to_vector();
  return out;
}

}  // namespace

TEST(CudaDeterminism, RunsAndResumesGiveTheSameBits) {
  MT_REQUIRE_CUDA();
  std::vector<std::string> dirs;
  for (int k = 0; k < 2; ++k) {
    dirs.push_back(test::temp_dir("det"));
    const test::CliResult r = test::run_cli(kRun + "--set checkpoint.resume=never --set run.out_dir=" + dirs.back());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  const std::string part = test::temp_dir("det_part");
  test::CliResult r = test::run_cli(kRun + "--set checkpoint.resume=never --stop-at-step 4 --set run.out_dir=" + part);
  ASSERT_EQ(r.code, 0) << r.out;
  r = test::run_cli(kRun + "--set checkpoint.resume=auto --set run.out_dir=" + part);
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(test::contains(r.out, "resum")) << r.out;

  const auto a = final_params(dirs[0]), b = final_params(dirs[1]), c = final_params(part);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(a.size(), c.size());
  for (const auto& kv : a) {
    EXPECT_EQ(kv.second, b.at(kv.first)) << kv.first << " differs between two runs";
    EXPECT_EQ(kv.second, c.at(kv.first)) << kv.first << " differs after a resume";
  }
}
