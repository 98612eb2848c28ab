// The mamba-train binary: `info`, `forward`, and clean errors (one "mamba-train: error:" line, documented exit
// codes) for bad arguments and bad files.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "cli_util.h"
#include "nn/safetensors.h"
#include "test_util.h"
#include "train/ckpt/hdf5_io.h"

using namespace mt;

using test::contains;
using test::run_cli;
using test::write_temp;
using Result = test::CliResult;

TEST(Cli, InfoPrintsExactParameterCounts) {
  Result r = run_cli("info --variant 130m --batch 8 --seq-len 2048");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "parameters: 129,135,360")) << r.out;
  EXPECT_TRUE(contains(r.out, "vocab 50280 (tied)")) << r.out;
  EXPECT_TRUE(contains(r.out, "activations kept for backward")) << r.out;
  r = run_cli("info --variant 2.8b");
  EXPECT_TRUE(contains(r.out, "parameters: 2,768,345,600")) << r.out;
  r = run_cli("info --variant 130m --set n_layer=12");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "n_layer 12")) << r.out;
}

TEST(Cli, BadArgumentsAreOneClearError) {
  Result r = run_cli("info --variant 7b");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error:")) << r.out;
  EXPECT_TRUE(contains(r.out, "7b")) << r.out;
  r = run_cli("info --set n_layers=3");  // a key without a section is a model key, checked by the config schema
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "--set model.n_layers: unknown key")) << r.out;
  EXPECT_TRUE(contains(r.out, "model.n_layer")) << r.out;
  r = run_cli("info --set trainer.chunk_len=-1");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.chunk_len")) << r.out;
  r = run_cli("info --batch -3");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run_cli("no-such-command");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(Cli, TrainUnderALauncherChecksItsEnvironment) {
  // Rank 1 of 2 with no rank 0 anywhere: the rendezvous gives up after distributed.timeout_s, naming the address.
  const char* vars[][2] = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29511"}};
  for (auto& v : vars) setenv(v[0], v[1], 1);
  Result r = run_cli(
      "train configs/selective_copying.yaml --set run.out_dir=/tmp/mt_cli_world2 "
      "--set distributed.timeout_s=1 --set trainer.micro_batch_size=16");
  EXPECT_EQ(r.code, 8) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: rendezvous (rank 1): could not reach rank 0 at 127.0.0.1:29511"))
      << r.out;
  r = run_cli("train configs/selective_copying.yaml --nproc 2 --set run.out_dir=/tmp/mt_cli_world2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--nproc 2: this process is already rank 1 of 2")) << r.out;
  setenv("WORLD_SIZE", "two", 1);
  r = run_cli("train configs/selective_copying.yaml --set run.out_dir=/tmp/mt_cli_world2");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "WORLD_SIZE='two' is not an integer")) << r.out;
  unsetenv("MASTER_PORT");
  setenv("WORLD_SIZE", "2", 1);
  r = run_cli("train configs/selective_copying.yaml --set run.out_dir=/tmp/mt_cli_world2");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "MASTER_PORT is not set")) << r.out;
  for (auto& v : vars) unsetenv(v[0]);
}

TEST(Cli, ForwardReportsMissingAndBadFiles) {
  const std::string parity = test::source_path("tests/data/parity");
  Result r = run_cli("forward --hf /nonexistent/dir --input-ids x --out /tmp/x.h5");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "/nonexistent/dir")) << r.out;
  const std::string ragged = write_temp("1 2 3\n4 5\n");
  r = run_cli("forward --hf " + parity + " --input-ids " + ragged + " --out /tmp/x.h5");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, ragged + ":2: sequence has 2 ids but earlier lines have 3")) << r.out;
  const std::string word = write_temp("1 2 three\n");
  r = run_cli("forward --hf " + parity + " --input-ids " + word + " --out /tmp/x.h5");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, word + ":1:5: 'three' is not a token id")) << r.out;
  const std::string big = write_temp("1 2 99999\n");
  r = run_cli("forward --hf " + parity + " --input-ids " + big + " --out /tmp/x.h5");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "outside the model's vocabulary")) << r.out;
  for (auto& f : {ragged, word, big}) unlink(f.c_str());
}

TEST(Cli, ForwardWritesLogitsAndGradients) {
  const std::string parity = test::source_path("tests/data/parity");
  const std::string out = "/tmp/mt_cli_forward_" + std::to_string(getpid()) + ".h5";
  Result r = run_cli("forward --hf " + parity + " --input-ids " + parity + "/ids.txt --out " + out + " --grads");
  ASSERT_EQ(r.code, 0) << r.out;
  auto golden = load_safetensors(parity + "/golden.safetensors");
  Shape shape;
  std::vector<double> logits = train::read_h5_dataset(out, "logits", &shape);
  EXPECT_EQ(shape, golden["logits"].shape());
  EXPECT_LE(test::rel_l2(logits, golden["logits"].to_vector()), 1e-4);
  std::vector<double> loss = train::read_h5_dataset(out, "loss");
  EXPECT_NEAR(loss[0], golden["loss"].item(), 1e-4 * std::fabs(golden["loss"].item()));
  std::vector<double> g = train::read_h5_dataset(out, "grad/backbone.layers.0.mixer.A_log");
  EXPECT_LE(test::rel_l2(g, golden["grad/backbone.layers.0.mixer.A_log"].to_vector()), 1e-4);
  unlink(out.c_str());
}
