// `mamba-train train` end to end through the binary (fresh processes, as users run it): exact resume, gradient
// accumulation, SIGTERM / SIGHUP / a closed terminal, non-finite steps, resume refusals, export, checkpoint verify, and
// a model that learns.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli_util.h"
#include "hangup_run.h"
#include "nn/hf_io.h"
#include "run_util.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/checkpoint_io.h"

extern char** environ;

using namespace mt;
using test::contains;
using test::run_cli;

using test::ckpt;
using test::read_text;
using test::small_lm_args;

namespace {

// The training records of metrics.jsonl as "step: loss lr grad_norm" lines (what a resume must reproduce; the
// throughput and wall-clock fields differ from run to run).
std::string train_records(const std::string& out_dir) {
  std::ifstream in(out_dir + "/metrics.jsonl");
  std::string line, out;
  while (std::getline(in, line)) {
    if (!contains(line, "\"tokens_per_s\"")) continue;
    auto field = [&](const std::string& k) {
      const size_t at = line.find("\"" + k + "\":");
      return at == std::string::npos ? std::string("?")
                                     : line.substr(at + k.size() + 3, line.find(',', at) - at - k.size() - 3);
    };
    out += field("step") + ": " + field("loss") + " " + field("lr") + " " + field("grad_norm") + "\n";
  }
  return out;
}

// `mamba-train-faults` with MT_FAULT set (tests/fault_provider.cpp).
test::CliResult run_faults(const std::string& fault, const std::string& args) {
  return test::run_program("MT_FAULT='" + fault + "'", MT_FAULTS_BINARY, args);
}

// Waits for pid with a deadline; returns its wait status, or -1 (after SIGKILL) when it did not end in time.
int wait_for(pid_t pid, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int st = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &st, WNOHANG) == pid) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &st, 0);
  return -1;
}

std::string shell_cmd(const std::string& prefix, const char* binary, const std::string& args) {
  return "cd '" + std::string(MT_SOURCE_DIR) + "' && " + prefix + " exec " + binary + " " + args;
}

}  // namespace

TEST(Trainer, ResumeIsBitExact) {
  // 12 steps straight vs 5 steps, stop (a fresh process), resume to 12: the final checkpoints (parameters, both
  // Adam moments, step counters, scaler, RNG and data position) are the same bits; only the wall-clock
  // run/elapsed_s differs. Gradient accumulation (2 micro-batches per step) is on, and the stop is not at a
  // checkpoint.every boundary.
  const std::string dir = test::temp_dir("resume");
  test::CliResult r = run_cli(small_lm_args(dir, 12));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string straight = test::keep_copy(ckpt(dir, 12));
  const std::string straight_log = train_records(dir);
  std::filesystem::remove_all(dir);
  r = run_cli(small_lm_args(dir, 12) + " --stop-at-step 5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "stopped at step 5")) << r.out;
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 5)), "");
  r = run_cli(small_lm_args(dir, 12));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 5) + " at step 5")) << r.out;
  test::expect_same_training_state(straight, ckpt(dir, 12));
  std::filesystem::remove_all(std::filesystem::path(straight).parent_path());
  // The tensors themselves, for a readable failure.
  train::CheckpointData d = train::load_checkpoint(ckpt(dir, 12));
  EXPECT_EQ(d.ints["step"], 12);
  EXPECT_EQ(d.ints["samples_seen"], 12 * 8);
  EXPECT_EQ(d.ints["optim/step"], 12);
  // Metrics of both processes are in one file, each step once.
  std::ifstream m(dir + "/metrics.jsonl");
  std::string line;
  int train_lines = 0;
  while (std::getline(m, line)) train_lines += contains(line, "\"tokens_per_s\"");
  EXPECT_EQ(train_lines, 6);  // steps 2, 4, ..., 12
  // ... with the same mean losses: the record of step 6 averages steps 5 and 6 although step 5 ran in the first
  // process (the logging window is in the checkpoint).
  EXPECT_EQ(train_records(dir), straight_log);
  EXPECT_TRUE(contains(straight_log, "6: ")) << straight_log;
  EXPECT_TRUE(std::filesystem::exists(dir + "/loss.svg"));
  EXPECT_TRUE(contains(read_text(dir + "/config.yaml"), "  d_model: 32\n"));
  std::filesystem::remove_all(dir);
}

TEST(Trainer, Bf16ResumeIsBitExact) {
  // bf16 compute: the straight run's forwards mostly read the weight copies AdamW wrote (a checkpoint save reads the
  // masters, so the step after one casts afresh); the stopped and resumed runs cast at other steps. Equal final
  // checkpoints mean the copies AdamW writes are the casts, through accumulation and evals.
  const std::string dir = test::temp_dir("resume_bf16");
  const std::string bf16 = " --set trainer.precision=bf16";
  test::CliResult r = run_cli(small_lm_args(dir, 9) + bf16);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string straight = test::keep_copy(ckpt(dir, 9));
  std::filesystem::remove_all(dir);
  r = run_cli(small_lm_args(dir, 9) + bf16 + " --stop-at-step 3");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir, 9) + bf16);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 3) + " at step 3")) << r.out;
  test::expect_same_training_state(straight, ckpt(dir, 9));
  std::filesystem::remove_all(std::filesystem::path(straight).parent_path());
  std::filesystem::remove_all(dir);
}

TEST(Trainer, AccumulationMatchesOneLargeBatch) {
  // global batch 8 as 2 x 4 or 1 x 8: the same samples, the same weighted mean loss, so the same updates up to
  // float summation order.
  const std::string a = test::temp_dir("acc_a"), b = test::temp_dir("acc_b");
  test::CliResult r = run_cli(small_lm_args(a, 4));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(b, 4) + " --set trainer.micro_batch_size=8");
  ASSERT_EQ(r.code, 0) << r.out;
  train::CheckpointData da = train::load_checkpoint(ckpt(a, 4)), db = train::load_checkpoint(ckpt(b, 4));
  ASSERT_EQ(da.tensors.size(), db.tensors.size());
  for (auto& kv : da.tensors) {
    if (kv.first.rfind("model/", 0) != 0) continue;
    const auto x = kv.second.to_vector(), y = db.tensors.at(kv.first).to_vector();
    EXPECT_LE(test::tolerance_ratio(x, y, 1e-6, 1e-4), 1.0) << kv.first;
  }
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

TEST(Trainer, SigtermSavesACheckpointAndExits143) {
  const std::string dir = test::temp_dir("sigterm");
  const std::string log = dir + "/out.log";
  const std::string cmd = "cd '" + std::string(MT_SOURCE_DIR) + "' && exec " + std::string(MT_BINARY) + " " +
                          small_lm_args(dir, 100000) + " > " + log + " 2>&1";
  pid_t pid = 0;
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  // Wait until it has trained a few steps (the first checkpoint is written at step 4).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(ckpt(dir, 4) + ".sha256") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(std::filesystem::exists(ckpt(dir, 4) + ".sha256")) << read_text(log);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st)) << read_text(log);
  EXPECT_EQ(WEXITSTATUS(st), 143) << read_text(log);
  const std::string out = read_text(log);
  EXPECT_TRUE(contains(out, "stopped by SIGTERM at step")) << out;
  std::vector<std::string> skipped;
  const std::string latest = train::latest_checkpoint(dir + "/checkpoints", &skipped);
  ASSERT_FALSE(latest.empty());
  EXPECT_TRUE(skipped.empty());
  const int64_t step = train::load_checkpoint(latest).ints["step"];
  EXPECT_GT(step, 4);
  EXPECT_TRUE(contains(out, "stopped by SIGTERM at step " + std::to_string(step))) << out;
  // checkpoint verify agrees, and the run resumes from there.
  test::CliResult r = run_cli("checkpoint verify " + dir);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "latest valid: " + latest)) << r.out;
  r = run_cli(small_lm_args(dir, step + 2));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + latest)) << r.out;
  std::filesystem::remove_all(dir);
}

// SIGHUP and output that has gone away: a run whose terminal closes (an ssh session ends) checkpoints and exits 129
// like SIGTERM, even though every write to the terminal now fails; a run whose stdout / stderr pipe lost its reader
// is not killed by SIGPIPE; under nohup SIGHUP stays ignored.
TEST(Trainer, ClosedTerminalCheckpointsAndExits129) {
  // The run's stdout and stderr are a pseudo-terminal, its controlling terminal; closing the master side is what a
  // closed terminal window or ssh session does: SIGHUP, then EIO on every write (the progress bar, "checkpoint
  // saved", the final lines). The checkpoint must still be written.
  const std::string dir = test::temp_dir("hup_pty");
  const test::HangupRun run = test::run_then_hang_up(
      MT_SOURCE_DIR,
      "exec " + std::string(MT_BINARY) + " " + small_lm_args(dir, 100000) + " --set logging.progress=true",
      [&] { return std::filesystem::exists(ckpt(dir, 4) + ".sha256"); }, 120);
  ASSERT_TRUE(run.reached) << run.out;  // hung up once the checkpoint of step 4 was published
  const int st = run.status;
  ASSERT_TRUE(WIFEXITED(st)) << "status " << st << (WIFSIGNALED(st) ? " (signal)" : "") << "\n" << run.out;
  EXPECT_EQ(WEXITSTATUS(st), 129) << run.out;
  std::vector<std::string> skipped;
  const std::string latest = train::latest_checkpoint(dir + "/checkpoints", &skipped);
  ASSERT_FALSE(latest.empty());
  EXPECT_TRUE(skipped.empty());
  const int64_t step = train::load_checkpoint(latest).ints["step"];
  EXPECT_GT(step, 4);  // saved at the step where it stopped
  test::CliResult r = run_cli("checkpoint verify " + dir);
  EXPECT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir, step + 1));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + latest)) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(Trainer, APipeWithoutAReaderDoesNotKillTheRun) {
  // stdout and stderr go to a pipe whose reader is gone (a `| tee` that died with the session): every write fails
  // with EPIPE instead of SIGPIPE killing the run. SIGHUP after step 5 then stops it with a checkpoint.
  const std::string dir = test::temp_dir("hup_pipe");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  const std::string cmd = shell_cmd("MT_FAULT='step_end=5:hup'", MT_FAULTS_BINARY, small_lm_args(dir, 12));
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/bin/sh", &fa, nullptr, const_cast<char**>(argv), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(p[1]);
  const int st = wait_for(pid, 120);
  ASSERT_TRUE(WIFEXITED(st)) << "status " << st << (WIFSIGNALED(st) ? " (killed by a signal)" : "");
  EXPECT_EQ(WEXITSTATUS(st), 129);
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 5)), "");
  EXPECT_EQ(train::latest_checkpoint(dir + "/checkpoints"), ckpt(dir, 5));
  std::filesystem::remove_all(dir);
}

TEST(Trainer, UnderNohupSighupIsIgnored) {
  // `nohup mamba-train ...` (SIGHUP ignored when it starts): the run does not stop.
  const std::string dir = test::temp_dir("hup_nohup");
  const std::string cmd =
      shell_cmd("trap '' HUP; MT_FAULT='step_end=2:hup'", MT_FAULTS_BINARY, small_lm_args(dir, 6)) + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int st = ::pclose(f);
  ASSERT_TRUE(WIFEXITED(st)) << out;
  EXPECT_EQ(WEXITSTATUS(st), 0) << out;
  EXPECT_FALSE(contains(out, "stopped by SIGHUP")) << out;
  EXPECT_EQ(train::latest_checkpoint(dir + "/checkpoints"), ckpt(dir, 6));
  std::filesystem::remove_all(dir);
}

TEST(Trainer, RepeatedNonFiniteStepsStopNamingStepTensorAndCheckpoint) {
  // A model whose final norm weight holds a NaN: every loss is NaN, every step is skipped, and after
  // max_nonfinite_steps in a row the run stops with exit code 6; the parameters were never touched.
  const std::string dir = test::temp_dir("nan");
  MambaConfig mc;
  mc.vocab_size = 256;
  mc.d_model = 32;
  mc.n_layer = 2;
  mc.d_inner = 0;
  mc.dt_rank = 0;
  mc.finalize();
  nn::MambaLMHeadModel model(mc);
  Generator g(7);
  model.init_parameters(g);
  model.parameter("backbone.norm_f.weight").data<float>()[3] = NAN;
  nn::save_hf_model(model, dir + "/init");
  test::CliResult r = run_cli(small_lm_args(dir, 20) + " --set model.init_from=" + dir +
                              "/init --set trainer.max_nonfinite_steps=3 --set checkpoint.every=2");
  EXPECT_EQ(r.code, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: training stopped at step 3 after 3 consecutive non-finite steps"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "first non-finite tensor: loss")) << r.out;
  // The checkpoint of step 2 was saved during the streak: no checkpoint from before it exists.
  EXPECT_TRUE(contains(r.out, "last good checkpoint: none (every checkpoint was saved during the streak)")) << r.out;
  train::CheckpointData d = train::load_checkpoint(ckpt(dir, 2));
  EXPECT_EQ(d.ints["optim/step"], 0);     // skipped steps never reach the optimizer
  EXPECT_EQ(d.ints["samples_seen"], 16);  // but the data advances
  EXPECT_EQ(d.ints["scaler/skipped_total"], 2);
  const auto w = d.tensors.at("model/backbone.layers.0.mixer.in_proj.weight").to_vector();
  const auto w0 = model.parameter("backbone.layers.0.mixer.in_proj.weight").to_vector();
  EXPECT_EQ(w, w0);
  std::filesystem::remove_all(dir);
}

TEST(Trainer, ANonFiniteStreakKeepsAndNamesTheCheckpointBeforeIt) {
  // NaN losses at steps 5, 6 and 7 (max 3 in a row), a checkpoint every 2 steps, keep_last 1: the checkpoint of step
  // 6 is saved during the streak. The stop names the one of step 4, and retention kept it.
  const std::string dir = test::temp_dir("nan_streak");
  const std::string args = small_lm_args(dir, 20) +
                           " --set trainer.max_nonfinite_steps=3 --set checkpoint.every=2 --set checkpoint.keep_last=1";
  test::CliResult r = run_faults("loss=5:nan;loss=6:nan;loss=7:nan", args);
  EXPECT_EQ(r.code, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "training stopped at step 7 after 3 consecutive non-finite steps")) << r.out;
  EXPECT_TRUE(contains(
      r.out, "; last good checkpoint: " + ckpt(dir, 4) + " (the checkpoints after it were saved during the streak)"))
      << r.out;
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 4)), "");
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 6)), "");
  EXPECT_FALSE(std::filesystem::exists(ckpt(dir, 2)));  // keep_last 1 applies to the others
  EXPECT_EQ(train::load_checkpoint(ckpt(dir, 6)).ints["scaler/nonfinite_streak"], 2);
  // Resumed from the checkpoint saved during the streak, which goes on: the same checkpoint is named.
  r = run_faults("loss=7:nan", args);
  EXPECT_EQ(r.code, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 6))) << r.out;
  EXPECT_TRUE(contains(r.out, "; last good checkpoint: " + ckpt(dir, 4) + " (")) << r.out;
  EXPECT_TRUE(std::filesystem::exists(ckpt(dir, 4)));
  // Resumed from it, the run goes on; once the streak is over, retention lets it go.
  r = run_cli(small_lm_args(dir, 10) + " --set checkpoint.every=2 --set checkpoint.keep_last=1" +
              " --set checkpoint.resume=" + ckpt(dir, 4));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(std::filesystem::exists(ckpt(dir, 4)));
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 10)), "");
  std::filesystem::remove_all(dir);
}

TEST(Trainer, TheTempFileOfAKilledSaveIsGoneAfterTheNextSave) {
  // kill -9 half-way through writing the checkpoint of step 8 leaves a .ckpt-*.tmp; the resumed run's first save
  // removes it, however young it is.
  const std::string dir = test::temp_dir("tmp_debris");
  test::CliResult r = run_faults("checkpoint:data:partial#2:kill", small_lm_args(dir, 12));
  EXPECT_EQ(r.code, 128 + SIGKILL) << r.out;
  auto temps = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints"))
      n += train::is_checkpoint_temp_name(e.path().filename().string());
    return n;
  };
  ASSERT_EQ(temps(), 1);
  r = run_cli(small_lm_args(dir, 12));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 4))) << r.out;
  EXPECT_EQ(temps(), 0);
  std::filesystem::remove_all(dir);
}

TEST(Trainer, ResumeRefusesADifferentModelOrData) {
  const std::string dir = test::temp_dir("refuse");
  test::CliResult r = run_cli(small_lm_args(dir, 8));  // checkpoints at steps 4 and 8
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir, 12) + " --set model.d_model=48");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: checkpoint '" + ckpt(dir, 8) + "': model differs from the config: "))
      << r.out;
  EXPECT_TRUE(contains(r.out, "hidden_size: checkpoint 32, config 48")) << r.out;
  const std::string other = test::write_temp(std::string(4000, 'a'));
  r = run_cli(small_lm_args(dir, 12) + " --set data.path=" + other);
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "trained on other data")) << r.out;
  r = run_cli(small_lm_args(dir, 12) + " --set run.seed=99");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "run.seed: checkpoint 1234, config 99")) << r.out;
  // A corrupt newest checkpoint: refused when named, skipped with a warning by resume: auto.
  {
    std::fstream f(ckpt(dir, 8), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(2000);
    const char c = static_cast<char>(f.get());
    f.seekp(2000);
    f.put(static_cast<char>(c ^ 0x10));
  }
  r = run_cli(small_lm_args(dir, 12) + " --set checkpoint.resume=" + ckpt(dir, 8));
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: checkpoint '" + ckpt(dir, 8) + "'")) << r.out;
  // verify exits 13 (the newest checkpoint is invalid) and still names the newest valid one.
  r = run_cli("checkpoint verify " + dir);
  EXPECT_EQ(r.code, 13) << r.out;
  EXPECT_TRUE(contains(r.out, "INVALID " + ckpt(dir, 8))) << r.out;
  EXPECT_TRUE(contains(r.out, "latest valid: " + ckpt(dir, 4) + " (1 valid, 1 invalid)")) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: the newest checkpoint '" + ckpt(dir, 8) +
                                  "' is invalid (SHA-256 mismatch: file changed or truncated"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "); the newest valid one is '" + ckpt(dir, 4) + "'")) << r.out;
  // export of the run says which checkpoint it took.
  r = run_cli("export " + dir + " --hf " + dir + "/hf");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "warning: skipping invalid checkpoint " + ckpt(dir, 8) + ": SHA-256 mismatch")) << r.out;
  EXPECT_TRUE(contains(r.out, "exporting " + ckpt(dir, 4) + ", the newest valid checkpoint")) << r.out;
  EXPECT_TRUE(contains(r.out, "exported " + ckpt(dir, 4) + " (step 4,")) << r.out;
  // A newest file without a manifest is an interrupted save, never published: not a damaged checkpoint.
  std::filesystem::remove(ckpt(dir, 8) + ".sha256");
  r = run_cli("checkpoint verify " + dir);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "partial " + ckpt(dir, 8) + ": no manifest")) << r.out;
  EXPECT_TRUE(contains(r.out, "latest valid: " + ckpt(dir, 4) + " (1 valid, 0 invalid)")) << r.out;
  r = run_cli(small_lm_args(dir, 12));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "warning: skipping invalid checkpoint " + ckpt(dir, 8))) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 4) + " at step 4")) << r.out;
  unlink(other.c_str());
  std::filesystem::remove_all(dir);
}

TEST(Trainer, ExportWritesAHuggingFaceDirectoryWithTheTrainedWeights) {
  const std::string dir = test::temp_dir("export");
  test::CliResult r = run_cli(small_lm_args(dir, 4));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("export " + dir + " --hf " + dir + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "exported " + ckpt(dir, 4))) << r.out;
  auto model = nn::load_hf_model(dir + "/hf");
  train::CheckpointData d = train::load_checkpoint(ckpt(dir, 4));
  for (auto& np : model->named_parameters())
    EXPECT_EQ(np.second->to_vector(), d.tensors.at("model/" + np.first).to_vector()) << np.first;
  r = run_cli("export " + dir + "/nothing-here --hf " + dir + "/hf2");
  EXPECT_EQ(r.code, 5) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(Trainer, BadConfigsAndUnsupportedSettingsAreOneClearError) {
  test::CliResult r = run_cli("train configs/tinyshakespeare.yaml --set optimizer.lrr=1");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --set optimizer.lrr: unknown key; did you mean 'optimizer.lr'?"))
      << r.out;
  const std::string dir = test::temp_dir("badcfg");
  r = run_cli("train configs/tinyshakespeare.yaml --set model.head=sequence_classification --set run.out_dir=" + dir);
  EXPECT_EQ(r.code, 3) << r.out;
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(contains(r.out, "classification heads need data.kind classification")) << r.out;
  r = run_cli("train /nonexistent.yaml");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "/nonexistent.yaml")) << r.out;
  r = run_cli("train configs/tinyshakespeare.yaml --stop-at-step 0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --stop-at-step")) << r.out;
  r = run_cli("train");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(Trainer, LearnsSelectiveCopying) {
  // The selective copying task of the Mamba paper (Gu & Dao 2023, section 4.1) with the shipped model and optimizer,
  // shortened for CI to seq_len 20 and 300 steps (20 warmup): 4 data tokens scattered among 12 noise positions must be
  // reproduced in order after the context. Chance is 1/8 (untrained: 0.02, 100 steps: 0.72, 300 steps: 0.96); a model
  // without input-dependent (selective) state updates cannot solve it.
  const std::string dir = test::temp_dir("selcopy");
  test::CliResult r = run_cli("train configs/selective_copying.yaml --set run.out_dir=" + dir +
                              " --set data.seq_len=20 --set trainer.max_steps=300 --set scheduler.warmup_steps=20"
                              " --set checkpoint.every=0 --set logging.progress=false --set run.device=cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t at = r.out.find("eval step 300: ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const size_t acc = r.out.find("accuracy ", at);
  ASSERT_NE(acc, std::string::npos) << r.out;
  const double accuracy = std::stod(r.out.substr(acc + 9));
  std::printf("selective copying: validation accuracy %.4f after 300 steps\n", accuracy);
  EXPECT_GE(accuracy, 0.9) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(Trainer, Fp16OverflowSkipsStepsAndBacksOffTheScale) {
  // A loss scale far too large for fp16: the first steps overflow (inf gradients), are skipped without touching the
  // optimizer, and halve the scale until the gradients fit; then training proceeds.
  const std::string dir = test::temp_dir("fp16");
  test::CliResult r = run_cli(small_lm_args(dir, 24) +
                              " --set trainer.precision=fp16 --set trainer.loss_scale_init=1099511627776"
                              " --set trainer.max_nonfinite_steps=40");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "step 1: skipped (non-finite ")) << r.out;
  train::CheckpointData d = train::load_checkpoint(ckpt(dir, 24));
  const int64_t skipped = d.ints["scaler/skipped_total"];
  EXPECT_GE(skipped, 1);
  EXPECT_LT(skipped, 24);
  EXPECT_EQ(d.ints["optim/step"], 24 - skipped);
  EXPECT_EQ(d.ints["scaler/nonfinite_streak"], 0);
  EXPECT_EQ(d.floats["scaler/scale"], std::ldexp(1.0, 40 - static_cast<int>(skipped)));  // no growth in 24 steps
  std::filesystem::remove_all(dir);
}
