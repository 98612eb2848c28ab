// Long-sequence training through the binary: trainer.chunk_len follows whole-sequence training (gradient
// accumulation on), resumes bit-exactly, and is refused where it cannot apply.
#include <filesystem>

#include "cli_util.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"

using namespace mt;
using test::contains;
using test::run_cli;

namespace {

std::string lm_args(const std::string& out_dir, int64_t max_steps, int64_t chunk_len) {
  return "train configs/tinyshakespeare.yaml --set run.out_dir=" + out_dir +
         " --set model.d_model=24 --set model.n_layer=2 --set data.seq_len=40 --set trainer.micro_batch_size=2"
         " --set trainer.global_batch_size=4 --set scheduler.warmup_steps=2 --set trainer.eval_every=3"
         " --set trainer.eval_batches=2 --set trainer.log_every=1 --set checkpoint.every=3"
         " --set logging.progress=false --set logging.plot=false --set run.device=cpu --set trainer.chunk_len=" +
         std::to_string(chunk_len) + " --set trainer.max_steps=" + std::to_string(max_steps);
}

std::map<std::string, std::vector<double>> params_at(const std::string& dir, int64_t step) {
  std::map<std::string, std::vector<double>> out;
  for (auto& kv : train::load_checkpoint(dir + "/checkpoints/" + train::checkpoint_file_name(step)).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first] = kv.second.to_vector();
  return out;
}

}  // namespace

TEST(LongSequences, ChunkedTrainingFollowsWholeSequences) {
  // fp32, 6 steps of 2 micro-batches: chunks of 7 and 13 tokens (neither divides 40) against whole sequences. The
  // gradients agree to rounding, so the parameters after AdamW agree closely.
  const std::string whole = test::temp_dir("long_whole");
  test::CliResult r = run_cli(lm_args(whole, 6, 0));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto ref = params_at(whole, 6);
  for (int64_t chunk : {7, 13}) {
    const std::string dir = test::temp_dir("long_chunk");
    r = run_cli(lm_args(dir, 6, chunk));
    ASSERT_EQ(r.code, 0) << r.out;
    const auto got = params_at(dir, 6);
    ASSERT_EQ(got.size(), ref.size());
    for (auto& kv : ref) EXPECT_LE(test::tolerance_ratio(got.at(kv.first), kv.second, 1e-6, 1e-4), 1.0) << kv.first;
    std::filesystem::remove_all(dir);
  }
  std::filesystem::remove_all(whole);
}

TEST(LongSequences, ChunkedResumeIsBitExact) {
  const std::string dir = test::temp_dir("long_resume");
  test::CliResult r = run_cli(lm_args(dir, 7, 9));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto straight = params_at(dir, 7);
  std::filesystem::remove_all(dir);
  r = run_cli(lm_args(dir, 7, 9) + " --stop-at-step 4");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(lm_args(dir, 7, 9));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "at step 4")) << r.out;
  EXPECT_EQ(params_at(dir, 7), straight);
  std::filesystem::remove_all(dir);
}

TEST(LongSequences, ChunkLenIsRefusedWhereItCannotApply) {
  test::CliResult r = run_cli("train configs/promoters-ecoli.yaml --set trainer.chunk_len=16 --set run.device=cpu");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.chunk_len")) << r.out;
  EXPECT_TRUE(contains(r.out, "model.head")) << r.out;
  r = run_cli(
      "train configs/promoters-ecoli.yaml --set trainer.chunk_len=16 --set model.head=lm --set data.kind=text "
      "--set data.path=data/corpora/tinyshakespeare.txt --set run.device=cpu");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "model.bidirectional")) << r.out;
}

TEST(LongSequences, BlockCheckpointingTrainsTheSameBits) {
  // trainer.activation_checkpointing block, alone and with chunks: the final checkpoint's parameters are the bits of
  // the run without it.
  const std::string plain = test::temp_dir("ckpt_plain"), blocks = test::temp_dir("ckpt_blocks");
  for (int64_t chunk : {0, 11}) {
    test::CliResult r = run_cli(lm_args(plain, 3, chunk));
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_cli(lm_args(blocks, 3, chunk) + " --set trainer.activation_checkpointing=block");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(params_at(blocks, 3), params_at(plain, 3)) << "chunk_len " << chunk;
    std::filesystem::remove_all(plain);
    std::filesystem::remove_all(blocks);
  }
}
