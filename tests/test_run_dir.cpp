// The run directory (train/run_dir.h) through the binary: one trainer per directory, no fresh start over existing
// checkpoints, resume rules for a changed config, output directories checked before the first step, all-invalid
// checkpoints, --stop-at-step on a finished stop, and the records (starts.jsonl, elapsed_s, version).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_util.h"
#include "run_util.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"
#include "train/config/config.h"
#include "train/run_dir.h"

extern char** environ;

using namespace mt;
using test::ckpt;
using test::contains;
using test::read_jsonl;
using test::read_text;
using test::run_cli;
using test::small_lm_args;

namespace {

// Starts `mamba-train <args>` in the background (output to log); returns its pid.
pid_t spawn_cli(const std::string& args, const std::string& log) {
  const std::string cmd =
      "cd '" + std::string(MT_SOURCE_DIR) + "' && exec " + std::string(MT_BINARY) + " " + args + " > " + log + " 2>&1";
  pid_t pid = 0;
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  EXPECT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  return pid;
}

bool wait_for_file(const std::string& path, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return std::filesystem::exists(path);
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(RunDir, LockIsExclusiveAndReleasedWithItsHolder) {
  const std::string dir = test::temp_dir("lock");
  auto a = train::lock_run_directory(dir + "/run", "run.out_dir");
  ASSERT_NE(a, nullptr);
  const std::string e = test::error_of([&] { train::lock_run_directory(dir + "/run", "run.out_dir"); });
  EXPECT_TRUE(contains(e, "is in use by another trainer: pid " + std::to_string(getpid()) + " on host ")) << e;
  a.reset();
  EXPECT_NE(train::lock_run_directory(dir + "/run", "run.out_dir"), nullptr);
  std::filesystem::remove_all(dir);
}

TEST(RunDir, ASecondTrainerIsRefusedWhileRankZeroOfAJobHoldsTheDirectory) {
  // A 2-rank job (`--nproc 2`: rank 0 holds the lock) trains; a second trainer on the same run.out_dir is refused at
  // once with exit 12 naming the holder, and the job's checkpoints and metrics stay whole.
  const std::string dir = test::temp_dir("lock_job"), log = dir + ".log";
  const pid_t job = spawn_cli(small_lm_args(dir, 100000) + " --nproc 2 --set distributed.timeout_s=60", log);
  ASSERT_TRUE(wait_for_file(ckpt(dir, 4) + ".sha256", 120)) << read_text(log);
  const auto t0 = std::chrono::steady_clock::now();
  test::CliResult r = run_cli(small_lm_args(dir, 100000));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 12) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: run directory '" + dir +
                                  "' (run.out_dir) is in use by another "
                                  "trainer: pid "))
      << r.out;
  EXPECT_TRUE(contains(r.out, " on host ")) << r.out;
  EXPECT_LT(took, 30.0) << "refused at once, not after building the model";
  // The holder named is a rank of the job (not the launcher): its pid is in the lock file and it is a child of job.
  const std::string holder = read_text(dir + "/run.lock");
  const pid_t holder_pid = std::stoi(holder.substr(4));
  EXPECT_NE(holder_pid, job);
  EXPECT_TRUE(contains(read_text("/proc/" + std::to_string(holder_pid) + "/status"), "PPid:\t" + std::to_string(job)))
      << holder;
  ASSERT_EQ(kill(job, SIGTERM), 0);
  int st = 0;
  ASSERT_EQ(waitpid(job, &st, 0), job);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 143) << read_text(log);
  for (const auto& j : read_jsonl(dir + "/metrics.jsonl")) EXPECT_TRUE(j.contains("step")) << j.dump();
  std::vector<std::string> skipped;
  EXPECT_NE(train::latest_checkpoint(dir + "/checkpoints", &skipped), "");
  EXPECT_TRUE(skipped.empty());
  // The lock went with its holder: the same command now resumes.
  r = run_cli(small_lm_args(dir, train::load_checkpoint(train::latest_checkpoint(dir + "/checkpoints")).ints["step"]));
  EXPECT_EQ(r.code, 0) << r.out;
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

TEST(RunDir, ResumeNeverOverExistingCheckpointsIsRefused) {
  const std::string dir = test::temp_dir("never");
  test::CliResult r = run_cli(small_lm_args(dir, 8));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string metrics = read_text(dir + "/metrics.jsonl");
  const auto before = names_in(dir + "/checkpoints");
  r = run_cli(small_lm_args(dir, 12) + " --set checkpoint.resume=never");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: checkpoint.resume: never, but checkpoint.dir '" + dir +
                                  "/checkpoints' already holds 2 checkpoint(s) (ckpt-00000004.h5, "
                                  "ckpt-00000008.h5)"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "another run.name / run.out_dir")) << r.out;
  EXPECT_EQ(read_text(dir + "/metrics.jsonl"), metrics);
  EXPECT_EQ(names_in(dir + "/checkpoints"), before);
  std::filesystem::remove_all(dir);
}

TEST(RunDir, AChangedConfigResumesOnlyWhereItDoesNotChangeTheTraining) {
  const std::string dir = test::temp_dir("changed");
  test::CliResult r = run_cli(small_lm_args(dir, 8));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string config0 = read_text(dir + "/config.yaml");
  // Refused: the learning rate, the window length and the held-out fraction, each named with both values.
  r = run_cli(small_lm_args(dir, 12) +
              " --set optimizer.lr=0.0003 --set data.seq_len=48 --set data.val_fraction=0.2 --set optimizer.eps=1e-7");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: resuming " + ckpt(dir, 8) +
                                  ": the config differs from the "
                                  "checkpoint's in data.val_fraction: "
                                  "0.1 -> 0.2; data.seq_len: 32 -> 48; "
                                  "optimizer.lr: 0.003 -> 0.0003; "
                                  "optimizer.eps: 1e-08 -> 1e-07 (pass "
                                  "--accept-config-change"))
      << r.out;
  // Free: the length, cadences, retention, device, micro-batch at the same global batch, logging.
  r = run_cli(small_lm_args(dir, 10) +
              " --set trainer.log_every=1 --set trainer.eval_every=3 --set checkpoint.every=5 --set "
              "checkpoint.keep_last=4 --set trainer.micro_batch_size=8 --set logging.plot=false");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 8) + " at step 8")) << r.out;
  EXPECT_TRUE(contains(r.out, "config changes since the checkpoint: trainer.max_steps: 8 -> 10;")) << r.out;
  // Accepted from the command line, and recorded.
  r = run_cli(small_lm_args(dir, 12) + " --set checkpoint.every=5 --set optimizer.lr=0.0003 --accept-config-change");
  ASSERT_EQ(r.code, 0) << r.out;
  bool recorded = false;
  for (const auto& j : read_jsonl(dir + "/metrics.jsonl")) {
    EXPECT_TRUE(j.contains("elapsed_s")) << j.dump();
    if (j.value("event", "") != "config_change" || !j.value("accept_config_change", false)) continue;
    for (const auto& ch : j["changes"])
      recorded = recorded || (ch["key"] == "optimizer.lr" && ch["old"] == "0.003" && ch["new"] == "0.0003" &&
                              ch["free"] == false && j["step"] == 10);
  }
  EXPECT_TRUE(recorded) << read_text(dir + "/metrics.jsonl");
  // config.yaml is the fresh start's; each resume kept its own.
  EXPECT_EQ(read_text(dir + "/config.yaml"), config0);
  EXPECT_TRUE(contains(read_text(dir + "/config.resume-1.yaml"), "  max_steps: 10\n"));
  EXPECT_TRUE(contains(read_text(dir + "/config.resume-2.yaml"), "  lr: 0.0003\n"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/config.resume-3.yaml"));
  std::filesystem::remove_all(dir);
}

TEST(RunDir, CheckpointsWrittenBeforeNewKeysExistedResumeWithoutAWord) {
  // A checkpoint as an older mamba-train wrote it: its config lacks the keys added since (they count as their
  // defaults), and it has no run/elapsed_s or version strings.
  const std::string dir = test::temp_dir("oldckpt");
  test::CliResult r = run_cli(small_lm_args(dir, 4));
  ASSERT_EQ(r.code, 0) << r.out;
  train::CheckpointData d = train::load_checkpoint(ckpt(dir, 4));
  std::string yaml, line;
  std::istringstream in(d.strings["config_yaml"]);
  const char* added[] = {"  epochs:",    "  warmup_ratio:",        "  monitor:", "  monitor_mode:",
                         "  keep_best:", "  early_stop_patience:", "  head_lr:", "  freeze_backbone_steps:"};
  int dropped = 0;
  while (std::getline(in, line)) {
    bool drop = false;
    for (const char* a : added) drop = drop || line.rfind(a, 0) == 0;
    dropped += drop;
    if (!drop) yaml += line + "\n";
  }
  EXPECT_EQ(dropped, 8);
  d.strings["config_yaml"] = yaml;
  d.floats.erase("run/elapsed_s");
  d.strings.erase("mamba_train/version");
  d.strings.erase("mamba_train/commit");
  train::save_checkpoint(dir + "/checkpoints", 4, d, 10);
  r = run_cli(small_lm_args(dir, 6));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from " + ckpt(dir, 4) + " at step 4")) << r.out;
  EXPECT_TRUE(contains(r.out, "config changes since the checkpoint: trainer.max_steps: 4 -> 6\n")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(RunDir, UnwritableCheckpointDirectoryFailsBeforeTheFirstStep) {
  const std::string dir = test::temp_dir("unwritable");
  const std::string file = dir + "/a-file";
  std::ofstream(file) << "x";
  test::CliResult r = run_cli(small_lm_args(dir, 8) + " --set checkpoint.dir=" + file + "/checkpoints");
  EXPECT_EQ(r.code, 11) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: checkpoint.dir '" + file +
                                  "/checkpoints' cannot be created (checked before the first step)"))
      << r.out;
  EXPECT_FALSE(contains(r.out, "step 2/8")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/metrics.jsonl"));
  std::filesystem::remove_all(dir);
}

TEST(RunDir, AutoResumeStopsWhenEveryCheckpointIsInvalid) {
  const std::string dir = test::temp_dir("allbad");
  test::CliResult r = run_cli(small_lm_args(dir, 8));
  ASSERT_EQ(r.code, 0) << r.out;
  for (int64_t s : {4, 8}) {
    std::fstream f(ckpt(dir, s), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x5a');
  }
  const auto before = names_in(dir + "/checkpoints");
  r = run_cli(small_lm_args(dir, 12));
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: checkpoint.resume: auto: none of the 2 checkpoint(s) in '" + dir +
                                  "/checkpoints' verifies (" + ckpt(dir, 8) + ": SHA-256 mismatch"))
      << r.out;
  EXPECT_EQ(names_in(dir + "/checkpoints"), before);
  // A checkpoint file without its manifest is what an interrupted first save leaves: a fresh start.
  const std::string fresh = test::temp_dir("firstsave");
  std::filesystem::create_directories(fresh + "/checkpoints");
  std::filesystem::copy_file(ckpt(dir, 4), ckpt(fresh, 4));
  r = run_cli(small_lm_args(fresh, 4));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "warning: skipping invalid checkpoint " + ckpt(fresh, 4) + ": manifest missing"))
      << r.out;
  EXPECT_EQ(train::verify_checkpoint(ckpt(fresh, 4)), "");  // trained afresh and saved over the debris
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(fresh);
}

TEST(RunDir, StopAtAStepAlreadyReachedDoesNothing) {
  const std::string dir = test::temp_dir("stopagain");
  test::CliResult r = run_cli(small_lm_args(dir, 12) + " --stop-at-step 6");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string metrics = read_text(dir + "/metrics.jsonl");
  const auto before = names_in(dir + "/checkpoints");
  for (int64_t at : {6, 3}) {
    r = run_cli(small_lm_args(dir, 12) + " --stop-at-step " + std::to_string(at));
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(
        contains(r.out, "already at step 6, at or past --stop-at-step " + std::to_string(at) + ": nothing to do"))
        << r.out;
    EXPECT_EQ(names_in(dir + "/checkpoints"), before);
    EXPECT_EQ(read_text(dir + "/metrics.jsonl"), metrics);
  }
  std::filesystem::remove_all(dir);
}

TEST(RunDir, CheckpointsAreWrittenEvery1000StepsByDefault) {
  EXPECT_EQ(train::load_train_config("run:\n  name: x\ndata:\n  kind: selective_copying\n", "t.yaml").checkpoint.every,
            1000);
}

TEST(RunDir, RecordsTheBuildTheCommandTheHostAndTheElapsedTime) {
  const std::string dir = test::temp_dir("records");
  test::CliResult r = run_cli(small_lm_args(dir, 8) + " --stop-at-step 4");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir, 8));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto starts = read_jsonl(dir + "/starts.jsonl");
  ASSERT_EQ(starts.size(), 2u);
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const test::CliResult v = run_cli("--version");
  for (size_t i = 0; i < 2; ++i) {
    const auto& s = starts[i];
    EXPECT_TRUE(contains(v.out, "mamba-train " + s.value("version", "?") + " (commit " + s.value("commit", "?") + ")"))
        << v.out << s.dump();
    EXPECT_EQ(s.value("host", ""), host);
    EXPECT_TRUE(contains(s.value("command", ""), "train configs/tinyshakespeare.yaml --set run.out_dir=" + dir))
        << s.dump();
    EXPECT_EQ(s.value("device", ""), "cpu");
    EXPECT_EQ(s.value("gpu", ""), "cpu");
    EXPECT_EQ(s.value("world_size", 0), 1);
  }
  EXPECT_EQ(starts[0]["step"], 0);
  EXPECT_EQ(starts[0]["resumed_from"], "");
  EXPECT_EQ(starts[0]["config"], "config.yaml");
  EXPECT_EQ(starts[1]["step"], 4);
  EXPECT_EQ(starts[1]["resumed_from"], ckpt(dir, 4));
  EXPECT_EQ(starts[1]["config"], "config.yaml");  // the same resolved config: no copy
  EXPECT_FALSE(std::filesystem::exists(dir + "/config.resume-1.yaml"));
  // elapsed_s on every record, continuing across the resume from the checkpoint's total.
  const double at4 = train::load_checkpoint(ckpt(dir, 4)).floats.at("run/elapsed_s");
  double last = 0;
  for (const auto& j : read_jsonl(dir + "/metrics.jsonl")) {
    ASSERT_TRUE(j.contains("elapsed_s") && j["elapsed_s"].is_number()) << j.dump();
    const double e = j["elapsed_s"].get<double>();
    if (j["step"].get<int64_t>() > 4) {
      EXPECT_GE(e, at4) << j.dump();
    }
    EXPECT_GE(e, last - 1e-9) << j.dump();
    last = e;
  }
  EXPECT_GE(train::load_checkpoint(ckpt(dir, 8)).floats.at("run/elapsed_s"), at4);
  std::filesystem::remove_all(dir);
}
