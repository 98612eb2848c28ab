// mt_reliability: the reliability harness (docs/DESIGN.md "Reliability promises", docs/HARNESS.md). Runs
// mamba-train as a user would and counts what happened; the last line it prints is the summary
//   faults: N injected, N survived, data lost: 0; bad inputs: M tried, M rejected cleanly; fuzz: K targets, 0 crashes
//   in E execs
// Exit status 0 only when every fault was survived, every bad input rejected cleanly and no fuzz target crashed.
//
//   mt_reliability --bin mamba-train --faults-bin mamba-train-faults --src SOURCE_DIR --work DIR
//                  [--fuzz-dir DIR --fuzz-seconds S] [--jobs N] [--long]
//
// The faults and the fuzz targets run --jobs at a time (default: the number of cores; each training run is one
// thread), the two faults of a two-rank run alone and last (its collective has a 2 s timeout); reports print in order.
//
// Faults. A small CPU training run (selective copying, 12 steps, a checkpoint every 2, a log record every 3) is
// interrupted: through the fault sites of mamba-train-faults (MT_FAULT: a kill at each stage of a checkpoint save,
// ENOSPC / EIO in the write and the fsync, NaN losses and gradients, a failed allocation, SIGTERM, SIGHUP, a killed
// and a frozen rank of two) and from outside against the release binary (kill -9 at random moments, a closed
// terminal, ulimit -f, a truncated checkpoint, a small tmpfs when this machine lets us mount one). A fault is survived
// when
//   1. the run ends with the documented exit code (or the signal that killed it) and, when it could speak, exactly
//      one "mamba-train: error:" line per failing process naming the cause;
//   2. `mamba-train checkpoint verify RUN_DIR` exits 0 (13 when the newest checkpoint was damaged after the run; 5
//      saying there is none, when none was ever published) and names as the latest valid checkpoint the newest one
//      that was published (its manifest in place);
//   3. resuming with the release binary to the last step gives parameters AND optimizer moments bit-identical to an
//      uninterrupted run;
//   4. after the resume, metrics.jsonl holds the uninterrupted run's training records (step, loss, lr, grad_norm) and
//      no temp file of an interrupted save is left in the run or checkpoint directory.
// Failing 2 or 3 counts as data lost.
//
// Bad inputs. Each case of tests/reliability/bad_inputs.txt (configs with every yaml-cpp quirk, typos, wrong types,
// ranges and --set errors; data files; tokenizer files) and about 75 corrupted variants of a real checkpoint
// (truncations, bit flips, zeroed blocks, broken manifests, another model's checkpoint) must end with its exit
// code, exactly one error line containing its expected text, no crash and no sanitizer report.
//
// Fuzz. Every fuzz_* executable in --fuzz-dir runs for --fuzz-seconds on a copy of its seed corpus
// (tests/fuzz/corpus/<target>, and tests/fuzz/regressions/<target> replayed first); crashes are counted from its exit
// status and executions from libFuzzer's "Done N runs" line.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tests/hangup_run.h"
#include "train/ckpt/checkpoint.h"

namespace fs = std::filesystem;
using mt::train::CheckpointData;

namespace {

struct Args {
  std::string bin, faults_bin, src, work, fuzz_dir;
  int fuzz_seconds = 20;
  int jobs = 0;  // 0: the number of cores
  bool long_run = false;
} g;

struct Proc {
  int code = -1;  // exit code, or -1 when killed
  int sig = 0;    // the signal that killed it
  std::string out;
};

std::string q(const std::string& s) {  // single-quoted for sh
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

// Runs `cmd` with sh from the source directory; stdout and stderr together.
Proc sh(const std::string& cmd) {
  const std::string full = "cd " + q(g.src) + " && " + cmd + " 2>&1";
  Proc p;
  FILE* f = popen(full.c_str(), "r");
  if (!f) return p;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) p.out.append(buf, n);
  const int st = pclose(f);
  if (WIFEXITED(st)) {
    p.code = WEXITSTATUS(st);  // every command execs its program: the status is the program's own
  } else if (WIFSIGNALED(st)) {
    p.sig = WTERMSIG(st);
  }
  return p;
}

std::vector<std::string> error_lines(const std::string& out) {
  std::vector<std::string> r;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("mamba-train: error:", 0) == 0) r.push_back(line);
  return r;
}

bool sanitizer_report(const std::string& out) {
  return out.find("AddressSanitizer") != std::string::npos || out.find("runtime error:") != std::string::npos ||
         out.find("LeakSanitizer") != std::string::npos || out.find("UndefinedBehaviorSanitizer") != std::string::npos;
}

std::string tail(const std::string& s, size_t n = 1500) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

// Runs job(i) for every i in [0, n) on up to `jobs` threads; done(result) is called for each in index order, under a
// lock (it prints and counts).
template <class R>
void run_parallel(size_t n, int jobs, const std::function<R(size_t)>& job, const std::function<void(R&)>& done) {
  std::vector<std::optional<R>> results(n);
  std::mutex m;
  size_t next = 0, reported = 0;
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lk(m);
        if (next == n) return;
        i = next++;
      }
      R r = job(i);
      std::lock_guard<std::mutex> lk(m);
      results[i] = std::move(r);
      for (; reported < n && results[reported]; ++reported) done(*results[reported]);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min<int>(jobs, static_cast<int>(n)); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

// ---------------------------------------------------------------------------------------------------------------
// Faults

const int kSteps = 12;

std::string train_args(const std::string& dir) {
  return "train configs/selective_copying.yaml --set trainer.max_steps=12 --set trainer.micro_batch_size=8 "
         "--set trainer.global_batch_size=16 --set trainer.eval_every=0 --set trainer.eval_batches=2 "
         "--set trainer.log_every=3 --set logging.progress=false --set logging.plot=false --set checkpoint.every=2 "
         "--set checkpoint.keep_last=3 --set scheduler.warmup_steps=2 --set run.out_dir=" +
         q(dir);
}

std::mutex g_hdf5;  // HDF5 reads from the fault threads, one at a time

std::map<std::string, std::vector<double>> final_state(const std::string& run_dir) {
  std::lock_guard<std::mutex> lk(g_hdf5);
  std::map<std::string, std::vector<double>> r;
  const std::string ck = mt::train::latest_checkpoint(run_dir + "/checkpoints");
  if (ck.empty() || mt::train::checkpoint_step_from_name(fs::path(ck).filename().string()) != kSteps) return r;
  CheckpointData d = mt::train::load_checkpoint(ck);
  for (auto& kv : d.tensors) r[kv.first] = kv.second.to_vector();
  return r;
}

std::map<std::string, std::vector<double>> g_reference;

// The training records of a run's metrics.jsonl, "step loss lr grad_norm" per line (the fields a resume must
// reproduce; throughput and wall-clock time differ from run to run).
std::string train_records(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.find("\"tokens_per_s\"") == std::string::npos) continue;
    for (const char* k : {"\"step\":", "\"loss\":", "\"lr\":", "\"grad_norm\":"}) {
      const size_t at = line.find(k);
      out += at == std::string::npos ? std::string("?") : line.substr(at, line.find_first_of(",}", at) - at);
      out += ' ';
    }
    out += '\n';
  }
  return out;
}
std::string g_reference_records;

// Temp files of interrupted saves (".ckpt-*.tmp") in the run directory and its checkpoint directory.
std::vector<std::string> temp_files(const std::string& run_dir) {
  std::vector<std::string> r;
  for (const std::string& d : {run_dir, run_dir + "/checkpoints"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind(".ckpt-", 0) == 0 && n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0)
        r.push_back(e.path().string());
    }
  }
  return r;
}

// The newest checkpoint whose manifest is in place (published), or -1.
int64_t newest_published(const std::string& run_dir) {
  int64_t best = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir + "/checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    const int64_t st = mt::train::checkpoint_step_from_name(name);
    if (st > best && fs::exists(e.path().string() + ".sha256")) best = st;
  }
  return best;
}

struct Fault {
  std::string name;
  std::string how;  // the command prefix or wrapper: "" = plain
  bool faults_bin = true;
  std::string extra;    // more arguments
  int expect_code = 0;  // or expect_sig
  int expect_sig = 0;
  std::string expect_msg;  // in the error line(s)
  int max_error_lines = 1;
  int64_t expect_latest = -2;                          // -2: the newest published; otherwise this step (-1: none)
  int expect_verify = 0;                               // verify's exit code (13: the newest checkpoint is damaged)
  int64_t resume_step = -1;                            // resume from this checkpoint (-1: checkpoint.resume auto)
  std::function<void(const std::string& dir)> after;   // an external fault applied once the run ended
  std::function<Proc(const std::string& dir)> runner;  // replaces the run (external kills)
  bool runner_exit = false;  // a runner's run is judged by its exit code and error lines too (rule 1)
  bool alone = false;        // runs with no other fault beside it (a timeout that load could trip)
};

struct FaultResult {
  bool survived = false, lost = false;
  std::string report;
};

int g_injected = 0, g_survived = 0, g_lost = 0;

FaultResult run_fault(const Fault& f, int number) {
  const std::string dir = g.work + "/fault-" + std::to_string(number);
  fs::remove_all(dir);
  Proc p;
  if (f.runner) {
    p = f.runner(dir);
  } else {
    const std::string bin = f.faults_bin ? g.faults_bin : g.bin;
    p = sh("OMP_NUM_THREADS=1 " + f.how + " exec " + q(bin) + " " + train_args(dir) + " " + f.extra);
  }
  std::vector<std::string> why;
  if (f.runner == nullptr || f.runner_exit) {
    if (f.expect_sig ? p.sig != f.expect_sig : (p.code != f.expect_code || p.sig != 0))
      why.push_back(
          "ended with code " + std::to_string(p.code) + " signal " + std::to_string(p.sig) + ", expected " +
          (f.expect_sig ? "signal " + std::to_string(f.expect_sig) : "code " + std::to_string(f.expect_code)));
    const auto errs = error_lines(p.out);
    if (!f.expect_sig && f.expect_code != 0 && f.expect_code < 128) {  // 128 + N: stopped by signal N, no error
      if (errs.empty() || static_cast<int>(errs.size()) > f.max_error_lines)
        why.push_back(std::to_string(errs.size()) + " error lines");
      else if (errs[0].find(f.expect_msg) == std::string::npos && errs.back().find(f.expect_msg) == std::string::npos)
        why.push_back("error line without '" + f.expect_msg + "': " + errs[0]);
    }
    if (sanitizer_report(p.out)) why.push_back("sanitizer report");
  }
  if (f.after) f.after(dir);
  bool lost = false;
  // 2. verify names the newest published checkpoint.
  const int64_t published = newest_published(dir);
  const int64_t want = f.expect_latest == -2 ? published : f.expect_latest;
  if (f.expect_latest != -2 && want != published && !f.after)
    why.push_back("expected checkpoint " + std::to_string(want) + " to be the newest published, found " +
                  std::to_string(published));
  const Proc v = sh("exec " + q(g.bin) + " checkpoint verify " + q(dir));
  if (want >= 0) {
    const std::string line = "latest valid: " + dir + "/checkpoints/" + mt::train::checkpoint_file_name(want);
    if (v.code != f.expect_verify || v.out.find(line) == std::string::npos) {
      why.push_back("verify: " + tail(v.out, 400));
      lost = true;
    }
  } else if (v.code != 5) {  // none published (the run died before its first checkpoint, or its directory)
    why.push_back("verify with nothing published: " + tail(v.out, 400));
    lost = true;
  }
  // 3. resume to the end: bit-identical to the uninterrupted run.
  const std::string from =
      f.resume_step < 0 ? "auto" : q(dir + "/checkpoints/" + mt::train::checkpoint_file_name(f.resume_step));
  const Proc r = sh("OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(dir) + " --set checkpoint.resume=" + from);
  if (r.code != 0) {
    why.push_back("resume failed: " + tail(r.out, 600));
    lost = true;
  } else if (final_state(dir) != g_reference) {
    why.push_back("resumed run differs from the uninterrupted one");
    lost = true;
  } else {
    // 4. the same log, and no debris.
    const std::string records = train_records(dir);
    if (records != g_reference_records)
      why.push_back("metrics.jsonl differs from the uninterrupted run's:\n" + records + "        expected:\n" +
                    g_reference_records);
    for (const std::string& t : temp_files(dir)) why.push_back("temp file left behind: " + t);
  }
  FaultResult res;
  char buf[256];
  if (why.empty()) {
    res.survived = true;
    std::snprintf(buf, sizeof buf, "  ok    fault %-58s exit %s\n", f.name.c_str(),
                  p.sig ? ("signal " + std::to_string(p.sig)).c_str() : std::to_string(p.code).c_str());
    res.report = buf;
  } else {
    res.lost = lost;
    res.report = "  FAIL  fault " + f.name + (lost ? " (DATA LOST)" : "") + "\n";
    for (const auto& w : why) res.report += "        " + w + "\n";
    res.report += "        output: " + tail(p.out) + "\n";
  }
  return res;
}

// Release binary killed with SIGKILL after `ms` milliseconds.
Proc kill_after(const std::string& dir, int ms) {
  Proc p;
  // Everything the child needs is made before the fork: other threads may hold locks (malloc, the environment).
  const std::string cmd = "OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(dir);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(g.src.c_str()) != 0) ::_exit(127);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  p.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  p.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  return p;
}

// mamba-train-faults with MT_FAULT = spec, its stdout and stderr a pipe whose reader is gone (a `| tee` that died
// with the session): every write fails with EPIPE.
Proc run_with_dead_pipe(const std::string& dir, const std::string& spec) {
  Proc p;
  const std::string cmd = "MT_FAULT='" + spec + "' OMP_NUM_THREADS=1 exec " + q(g.faults_bin) + " " + train_args(dir);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return p;  // close-on-exec: no other fault's run may hold the reader open
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(g.src.c_str()) != 0) ::_exit(127);
    ::close(fds[0]);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[0]);
  ::close(fds[1]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  p.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  p.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  p.out = "(output went to a pipe without a reader)";
  return p;
}

// The release binary on a pseudo-terminal (its controlling terminal, with the progress bar), closed once the checkpoint
// of step `after_step` is published (tests/hangup_run.h).
Proc run_until_hangup(const std::string& dir, int64_t after_step) {
  const std::string published = dir + "/checkpoints/" + mt::train::checkpoint_file_name(after_step) + ".sha256";
  const mt::test::HangupRun run = mt::test::run_then_hang_up(
      g.src, "OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(dir) + " --set logging.progress=true",
      [&] { return fs::exists(published); }, 300);
  Proc p;
  p.out = run.reached ? run.out : "(the checkpoint of step " + std::to_string(after_step) + " never came)\n" + run.out;
  p.code = run.status != -1 && WIFEXITED(run.status) ? WEXITSTATUS(run.status) : -1;
  p.sig = run.status != -1 && WIFSIGNALED(run.status) ? WTERMSIG(run.status) : 0;
  return p;
}

void faults() {
  std::printf("== faults\n");
  const std::string ref = g.work + "/reference";
  fs::remove_all(ref);
  const Proc p = sh("OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(ref));
  g_reference = final_state(ref);
  g_reference_records = train_records(ref);
  if (p.code != 0 || g_reference.empty() || g_reference_records.empty()) {
    std::printf("  the uninterrupted reference run failed:\n%s\n", tail(p.out).c_str());
    std::exit(1);
  }
  std::vector<Fault> fs_;
  // A kill at every stage of the save of step 4 (the second save); retention first deletes at step 8 (keep_last 3).
  for (const char* file : {"data", "manifest", "latest"}) {
    for (const char* st : {"begin", "partial", "written", "synced", "renamed"}) {
      Fault f;
      const std::string stage = std::string(file) + ":" + st;
      f.name = "kill -9 at checkpoint stage " + stage;
      f.how = "MT_FAULT='checkpoint:" + stage + "#2:kill'";
      f.expect_sig = SIGKILL;
      const bool published = std::string(file) == "latest" || stage == "manifest:renamed";
      f.expect_latest = published ? 4 : 2;
      fs_.push_back(f);
    }
  }
  {
    Fault f;
    f.name = "kill -9 during retention (an old checkpoint deleted)";
    f.how = "MT_FAULT='checkpoint:retention:deleted#1:kill'";
    f.expect_sig = SIGKILL;
    f.expect_latest = 8;
    fs_.push_back(f);
  }
  // One fault through a site of mamba-train-faults: MT_FAULT spec, expected exit code (or signal), error text and
  // the checkpoint that must be the newest valid one afterwards.
  auto hooked = [&](const std::string& name, const std::string& spec, int code, int sig, const std::string& msg,
                    int64_t latest, const std::string& extra = "", int max_errors = 1) {
    Fault f;
    f.name = name;
    f.how = "MT_FAULT='" + spec + "'";
    f.expect_code = code;
    f.expect_sig = sig;
    f.expect_msg = msg;
    f.expect_latest = latest;
    f.extra = extra;
    f.max_error_lines = max_errors;
    fs_.push_back(f);
  };
  hooked("ENOSPC writing the checkpoint of step 4", "write#4:enospc", 11, 0, "No space left on device", 2);
  hooked("EIO writing the checkpoint of step 4", "write#4:eio", 11, 0, "Input/output error", 2);
  hooked("EIO in fsync of the checkpoint of step 4", "fsync#4:eio", 11, 0, "fsync failed", 2);
  hooked("NaN loss at steps 5 and 6 (max_nonfinite_steps 2)", "loss=5:nan;loss=6:nan", 6, 0,
         "first non-finite tensor: loss; last good checkpoint: ", 4, "--set trainer.max_nonfinite_steps=2");
  hooked("NaN gradient at steps 5 and 6", "grad=5:nan;grad=6:nan", 6, 0, "(gradient); last good checkpoint: ", 4,
         "--set trainer.max_nonfinite_steps=2");
  hooked("a host allocation fails mid-run", "alloc#2000:fail", 7, 0, "out of host memory: could not allocate", -2);
  hooked("SIGTERM after step 5", "step_end=5:term", 143, 0, "", 5);
  hooked("SIGHUP after step 5 (a closed terminal)", "step_end=5:hup", 129, 0, "", 5);
  {
    Fault f;
    f.name = "SIGHUP after step 5, stdout and stderr a pipe without a reader";
    f.runner = [](const std::string& dir) { return run_with_dead_pipe(dir, "step_end=5:hup"); };
    f.runner_exit = true;
    f.expect_code = 129;
    f.expect_latest = 5;
    fs_.push_back(f);
  }
  {
    Fault f;
    f.name = "release binary: its terminal closed after the checkpoint of step 2";
    f.runner = [](const std::string& dir) { return run_until_hangup(dir, 2); };
    f.runner_exit = true;
    f.expect_code = 129;
    fs_.push_back(f);
  }
  hooked("NaN loss at steps 5-7, a checkpoint saved during the streak (keep_last 1)",
         "loss=5:nan;loss=6:nan;loss=7:nan", 6, 0,
         "/checkpoints/ckpt-00000004.h5 (the checkpoints after it were saved during the streak)", -2,
         "--set trainer.max_nonfinite_steps=3 --set checkpoint.keep_last=1");
  fs_.back().resume_step = 4;  // the checkpoint it names, which retention kept
  hooked("kill -9 while writing the last checkpoint (step 12): its temp file", "checkpoint:data:partial#6:kill", 0,
         SIGKILL, "", 10);
  hooked("release binary: stop at step 4, between two log records", "", 0, 0, "", 4, "--stop-at-step 4");
  fs_.back().how = "";
  fs_.back().faults_bin = false;
  hooked("kill -9 after step 7", "step_end=7:kill", 0, SIGKILL, "", 6);
  hooked("rank 1 of 2 killed after step 5", "step_end=5@1:kill", 8, 0, "rank 1 of 2 was killed by signal 9", 4,
         "--nproc 2 --set distributed.timeout_s=30", 3);
  fs_.back().alone = true;
  hooked("rank 1 of 2 frozen (SIGSTOP) after step 5: a hung collective", "step_end=5@1:stop", 8, 0,
         "timed out receiving after 2 s (distributed.timeout_s)", 4, "--nproc 2 --set distributed.timeout_s=2", 3);
  fs_.back().alone = true;
  // From outside, against the release binary.
  std::mt19937 rng(20261202);
  const int rounds = g.long_run ? 24 : 6;
  for (int i = 0; i < rounds; ++i) {
    const int ms = std::uniform_int_distribution<int>(30, 1500)(rng);
    Fault f;
    f.name = "release binary: kill -9 after " + std::to_string(ms) + " ms";
    f.runner = [ms](const std::string& dir) { return kill_after(dir, ms); };
    fs_.push_back(f);
  }
  hooked("release binary: ulimit -f 200 (EFBIG on the first checkpoint)", "", 11, 0, "File too large", -1);
  fs_.back().how = "ulimit -f 200;";
  fs_.back().faults_bin = false;
  hooked("release binary: newest checkpoint truncated after a stop at step 6", "", 0, 0, "", 4, "--stop-at-step 6");
  fs_.back().how = "";
  fs_.back().faults_bin = false;
  fs_.back().expect_verify = 13;  // verify names the newest valid one, and says the newest is damaged
  fs_.back().after = [](const std::string& dir) {
    const std::string p = dir + "/checkpoints/" + mt::train::checkpoint_file_name(6);
    std::error_code ec;
    fs::resize_file(p, fs::file_size(p, ec) / 2, ec);
  };
  // The faults that may share the cores first, --jobs at a time, then those that run alone.
  const int first = g_injected + 1;
  g_injected += static_cast<int>(fs_.size());
  auto record = [](FaultResult& r) {
    if (r.survived) ++g_survived;
    if (r.lost) ++g_lost;
    std::fputs(r.report.c_str(), stdout);
    std::fflush(stdout);
  };
  for (int alone = 0; alone < 2; ++alone) {
    std::vector<size_t> part;
    for (size_t i = 0; i < fs_.size(); ++i)
      if (fs_[i].alone == (alone == 1)) part.push_back(i);
    run_parallel<FaultResult>(
        part.size(), alone ? 1 : g.jobs,
        [&](size_t k) { return run_fault(fs_[part[k]], first + static_cast<int>(part[k])); }, record);
  }
  // A small tmpfs (needs the right to mount): the disk fills up during a checkpoint.
  const std::string mnt = g.work + "/tmpfs";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=600k") == 0) {
    Fault f;
    f.name = "release binary: run directory on a 600 KiB tmpfs (ENOSPC)";
    f.runner = [&](const std::string&) {
      return sh("OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(mnt + "/run"));
    };
    ++g_injected;
    const Proc p = f.runner("");
    const auto errs = error_lines(p.out);
    const bool ok = p.code == 11 && errs.size() == 1 && errs[0].find("No space left on device") != std::string::npos;
    ok ? ++g_survived : 0;
    std::printf("  %s  fault %s: exit %d\n", ok ? "ok  " : "FAIL", f.name.c_str(), p.code);
    ::umount(mnt.c_str());
  } else {
    std::printf("  (a small tmpfs: mount not permitted here: %s; not counted)\n", std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bad inputs

int g_bad_tried = 0, g_bad_clean = 0;

void expect_rejected(const std::string& name, const std::string& cmd, int code, const std::string& msg) {
  ++g_bad_tried;
  const Proc p = sh(cmd);
  const auto errs = error_lines(p.out);
  std::string why;
  if (p.sig)
    why = "killed by signal " + std::to_string(p.sig);
  else if (sanitizer_report(p.out))
    why = "sanitizer report";
  else if (p.code != code)
    why = "exit " + std::to_string(p.code) + ", expected " + std::to_string(code);
  else if (errs.size() != 1)
    why = std::to_string(errs.size()) + " error lines";
  else if (errs[0].find(msg) == std::string::npos)
    why = "message without '" + msg + "'";
  if (why.empty()) {
    ++g_bad_clean;
    if (g.long_run) std::printf("  ok    %s: %s\n", name.c_str(), errs[0].c_str());
  } else {
    std::printf("  FAIL  bad input %s: %s\n        %s\n", name.c_str(), why.c_str(), tail(p.out).c_str());
  }
}

std::string expand(std::string s, const std::map<std::string, std::string>& vars) {
  for (const auto& kv : vars)
    for (size_t i; (i = s.find(kv.first)) != std::string::npos;) s.replace(i, kv.first.size(), kv.second);
  return s;
}

// tests/reliability/bad_inputs.txt: "NAME | EXIT | EXPECTED TEXT | ARGUMENTS" per line ('#' comments). ARGUMENTS
// may use {bin}, {src}, {work}, {cases} (tests/reliability/cases).
void corpus_cases() {
  const std::string list = g.src + "/tests/reliability/bad_inputs.txt";
  std::ifstream in(list);
  if (!in) {
    std::printf("  cannot read %s\n", list.c_str());
    ++g_bad_tried;
    return;
  }
  const std::map<std::string, std::string> vars = {
      {"{bin}", q(g.bin)}, {"{work}", g.work}, {"{src}", g.src}, {"{cases}", "tests/reliability/cases"}};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    size_t pos = 0;
    for (int k = 0; k < 3; ++k) {
      const size_t bar = line.find(" | ", pos);
      if (bar == std::string::npos) break;
      f.push_back(line.substr(pos, bar - pos));
      pos = bar + 3;
    }
    if (f.size() != 3) {
      std::printf("  FAIL  %s: malformed line: %s\n", list.c_str(), line.c_str());
      ++g_bad_tried;
      continue;
    }
    f.push_back(line.substr(pos));
    expect_rejected(f[0], "OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + expand(f[3], vars), std::atoi(f[1].c_str()),
                    expand(f[2], vars));
  }
}

std::vector<unsigned char> read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& p, const std::vector<unsigned char>& b) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// About 75 corrupted variants of a real checkpoint; each must be refused by `checkpoint verify` and by a resume.
void checkpoint_variants() {
  const std::string base = g.work + "/ckpt-base";
  fs::remove_all(base);
  const Proc p = sh("OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(base) + " --stop-at-step 2");
  const std::string good = base + "/checkpoints/" + mt::train::checkpoint_file_name(2);
  const std::vector<unsigned char> bytes = read_bytes(good);
  const std::vector<unsigned char> manifest = read_bytes(good + ".sha256");
  if (p.code != 0 || bytes.empty()) {
    std::printf("  FAIL  could not make the base checkpoint: %s\n", tail(p.out).c_str());
    ++g_bad_tried;
    return;
  }
  struct Variant {
    std::string name;
    std::vector<unsigned char> file, manifest;
    std::string expect;
    std::string other_config;  // resume under a config that differs (another model's checkpoint)
  };
  std::vector<Variant> vs;
  const size_t n = bytes.size();
  const double cuts[] = {0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 0.9999};
  for (double c : cuts) {
    Variant v{"truncated to " + std::to_string(static_cast<size_t>(c * n)) + " of " + std::to_string(n) + " bytes",
              std::vector<unsigned char>(bytes.begin(), bytes.begin() + static_cast<long>(c * n)), manifest,
              "SHA-256 mismatch: file changed or truncated", ""};
    vs.push_back(v);
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 25; ++i) {
    Variant v{"", bytes, manifest, "SHA-256 mismatch: file changed or truncated", ""};
    const size_t at = i < 5 ? static_cast<size_t>(i) * 97 : std::uniform_int_distribution<size_t>(0, n - 1)(rng);
    const int bit = static_cast<int>(rng() % 8);
    v.file[at] ^= static_cast<unsigned char>(1u << bit);
    v.name = "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " flipped";
    vs.push_back(v);
  }
  for (int i = 0; i < 15; ++i) {
    Variant v{"", bytes, manifest, "SHA-256 mismatch: file changed or truncated", ""};
    const size_t at = static_cast<size_t>(i) * (n / 15), len = std::min<size_t>(4096, n - at);
    std::fill(v.file.begin() + static_cast<long>(at), v.file.begin() + static_cast<long>(at + len), 0);
    if (v.file == bytes) v.file[at] ^= 0xff;  // the block was zeros already: make it a change
    v.name = "4 KiB zeroed at byte " + std::to_string(at);
    vs.push_back(v);
  }
  const std::string m(manifest.begin(), manifest.end());
  auto mf = [&](const std::string& name, const std::string& text, const std::string& expect) {
    vs.push_back(Variant{"manifest: " + name, bytes, std::vector<unsigned char>(text.begin(), text.end()), expect, ""});
  };
  mf("missing", "", "");  // handled below: no manifest file at all
  vs.back().manifest.clear();
  vs.back().expect = "manifest missing";
  mf("empty file", "\n", "manifest malformed");
  mf("another file's hash", std::string(64, 'a') + m.substr(64), "SHA-256 mismatch: file changed or truncated");
  mf("another file name", m.substr(0, 66) + "ckpt-00000099.h5\n", "manifest names another file");
  mf("hash cut short", m.substr(0, 40) + m.substr(64), "manifest malformed");
  mf("a NUL inside the file name", m.substr(0, 70) + std::string(1, '\0') + m.substr(71), "manifest");
  mf("binary garbage", std::string("\x00\xff\x13\x37garbage", 11), "manifest malformed");
  mf("two lines", m + m, "manifest malformed");
  mf("no separator", m.substr(0, 64) + m.substr(66), "manifest malformed");
  mf("1 MiB of text", std::string(1 << 20, 'x'), "manifest malformed");
  // Another model's checkpoint: resume a config whose model differs.
  const char* others[][2] = {{"--set model.d_model=32", "hidden_size: checkpoint 64, config 32"},
                             {"--set model.n_layer=3", "num_hidden_layers: checkpoint 2, config 3"},
                             {"--set model.d_state=8", "state_size: checkpoint 16, config 8"},
                             {"--set model.expand=4", "model differs from the config"},
                             {"--set data.seq_len=24", "trained on other data"},
                             {"--set run.seed=2", "run.seed: checkpoint 1, config 2"},
                             {"--set data.copy_vocab=6", "checkpoint"}};
  for (auto& o : others) vs.push_back(Variant{std::string("another model/run: ") + o[0], bytes, manifest, o[1], o[0]});
  int idx = 0;
  for (const Variant& v : vs) {
    const std::string dir = g.work + "/ckpt-variant-" + std::to_string(idx++);
    fs::remove_all(dir);
    fs::create_directories(dir + "/checkpoints");
    const std::string path = dir + "/checkpoints/" + mt::train::checkpoint_file_name(2);
    write_bytes(path, v.file);
    if (!v.manifest.empty() || v.name.find("missing") == std::string::npos) write_bytes(path + ".sha256", v.manifest);
    if (v.other_config.empty()) {
      expect_rejected("checkpoint verify, " + v.name, "exec " + q(g.bin) + " checkpoint verify " + q(path), 5,
                      v.expect.empty() ? "checkpoint" : v.expect);
    }
    // A resume from exactly this file: refused with exit 5, nothing overwritten.
    const std::vector<unsigned char> before = read_bytes(path);
    expect_rejected("resume from it, " + v.name,
                    "OMP_NUM_THREADS=1 exec " + q(g.bin) + " " + train_args(dir) +
                        " --set checkpoint.resume=" + q(path) + " " + v.other_config,
                    5, v.expect.empty() ? "checkpoint" : v.expect);
    if (read_bytes(path) != before) std::printf("  FAIL  %s: the checkpoint file changed\n", v.name.c_str());
  }
  // A run directory whose newest checkpoint is damaged (published, then changed): verify exits 13.
  {
    const std::string dir = g.work + "/ckpt-newest-damaged";
    fs::remove_all(dir);
    fs::create_directories(dir + "/checkpoints");
    const std::string old_path = dir + "/checkpoints/" + mt::train::checkpoint_file_name(2);
    const std::string new_path = dir + "/checkpoints/" + mt::train::checkpoint_file_name(4);
    write_bytes(old_path, bytes);
    write_bytes(old_path + ".sha256", manifest);
    std::vector<unsigned char> damaged = bytes;
    const std::string m4 =
        mt::train::checkpoint_manifest(mt::train::checkpoint_file_name(4), damaged.data(), damaged.size());
    write_bytes(new_path + ".sha256", std::vector<unsigned char>(m4.begin(), m4.end()));
    damaged[damaged.size() / 3] ^= 0x04;
    write_bytes(new_path, damaged);
    expect_rejected("checkpoint verify, the newest of two damaged", "exec " + q(g.bin) + " checkpoint verify " + q(dir),
                    13,
                    "the newest checkpoint '" + new_path + "' is invalid (SHA-256 mismatch: file changed or truncated");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fuzz

int g_fuzz_targets = 0, g_fuzz_crashes = 0;
long long g_fuzz_execs = 0;

void fuzz() {
  if (g.fuzz_dir.empty()) return;
  std::printf("== fuzz (%d s per target)\n", g.fuzz_seconds);
  std::vector<std::string> targets;
  for (const auto& e : fs::directory_iterator(g.fuzz_dir))
    if (e.path().filename().string().rfind("fuzz_", 0) == 0 && e.is_regular_file() &&
        (e.status().permissions() & fs::perms::owner_exec) != fs::perms::none)
      targets.push_back(e.path().string());
  std::sort(targets.begin(), targets.end());
  struct FuzzResult {
    int crashes = 0;
    long long runs = 0;
    std::string report;
  };
  auto job = [&](size_t k) {
    FuzzResult res;
    const std::string& t = targets[k];
    const std::string name = fs::path(t).filename().string();
    const std::string seeds = g.src + "/tests/fuzz/corpus/" + name.substr(5);
    const std::string regress = g.src + "/tests/fuzz/regressions/" + name.substr(5);
    const std::string corpus = g.work + "/corpus-" + name;
    fs::remove_all(corpus);
    fs::create_directories(corpus);
    std::error_code ec;
    if (fs::is_directory(seeds)) fs::copy(seeds, corpus, fs::copy_options::recursive, ec);
    // Regressions first: every input that ever crashed a target must now pass.
    if (fs::is_directory(regress) && !fs::is_empty(regress)) {
      const Proc r = sh("exec " + q(t) + " -runs=0 " + q(regress));
      if (r.code != 0 || r.sig) {
        ++res.crashes;
        res.report += "  FAIL  " + name + " regressions: " + tail(r.out) + "\n";
      }
    }
    const Proc p = sh("exec " + q(t) + " -max_total_time=" + std::to_string(g.fuzz_seconds) +
                      " -rss_limit_mb=2048 -timeout=10 -max_len=4096 -print_final_stats=1 -artifact_prefix=" +
                      q(g.work + "/" + name + "-") + " " + q(corpus));
    long long runs = 0;
    const size_t at = p.out.rfind("Done ");
    if (at != std::string::npos)
      runs = std::atoll(p.out.c_str() + at + 5);
    else {
      const size_t st = p.out.rfind("stat::number_of_executed_units:");
      if (st != std::string::npos) runs = std::atoll(p.out.c_str() + st + 31);
    }
    res.runs = runs;
    char buf[160];
    if (p.code != 0 || p.sig) {
      ++res.crashes;
      std::snprintf(buf, sizeof buf, "  FAIL  %s: crashed after %lld runs (artifact in %s):\n", name.c_str(), runs,
                    g.work.c_str());
      res.report += buf + tail(p.out, 3000) + "\n";
    } else {
      std::snprintf(buf, sizeof buf, "  ok    %-24s %lld execs\n", name.c_str(), runs);
      res.report += buf;
    }
    return res;
  };
  run_parallel<FuzzResult>(targets.size(), g.jobs, job, [](FuzzResult& r) {
    ++g_fuzz_targets;
    g_fuzz_crashes += r.crashes;
    g_fuzz_execs += r.runs;
    std::fputs(r.report.c_str(), stdout);
    std::fflush(stdout);
  });
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--bin")
      g.bin = next();
    else if (a == "--faults-bin")
      g.faults_bin = next();
    else if (a == "--src")
      g.src = next();
    else if (a == "--work")
      g.work = next();
    else if (a == "--fuzz-dir")
      g.fuzz_dir = next();
    else if (a == "--fuzz-seconds")
      g.fuzz_seconds = std::atoi(next().c_str());
    else if (a == "--jobs")
      g.jobs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--long")
      g.long_run = true;
    else {
      std::fprintf(stderr, "mt_reliability: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  if (g.jobs == 0) g.jobs = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (g.bin.empty() || g.faults_bin.empty() || g.src.empty() || g.work.empty()) {
    std::fprintf(stderr,
                 "usage: mt_reliability --bin B --faults-bin F --src DIR --work DIR [--fuzz-dir D] [--jobs N] "
                 "[--long]\n");
    return 2;
  }
  g.bin = fs::absolute(g.bin).string();
  g.faults_bin = fs::absolute(g.faults_bin).string();
  g.work = fs::absolute(g.work).string();
  fs::create_directories(g.work);
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  std::printf("(%d jobs)\n", g.jobs);
  faults();
  std::printf("  (faults: %.0f s)\n", since(t0));
  const auto t1 = std::chrono::steady_clock::now();
  std::printf("== bad inputs\n");
  corpus_cases();
  checkpoint_variants();
  std::printf("  %d of %d rejected cleanly\n  (bad inputs: %.0f s)\n", g_bad_clean, g_bad_tried, since(t1));
  const auto t2 = std::chrono::steady_clock::now();
  fuzz();
  if (!g.fuzz_dir.empty()) std::printf("  (fuzz: %.0f s)\n", since(t2));
  const double secs = since(t0);
  std::printf("(%.0f s)\n", secs);
  std::printf(
      "faults: %d injected, %d survived, data lost: %d; bad inputs: %d tried, %d rejected cleanly; fuzz: %d "
      "targets, %d crashes in %lld execs\n",
      g_injected, g_survived, g_lost, g_bad_tried, g_bad_clean, g_fuzz_targets, g_fuzz_crashes, g_fuzz_execs);
  const bool ok = g_survived == g_injected && g_lost == 0 && g_bad_clean == g_bad_tried && g_fuzz_crashes == 0;
  return ok ? 0 : 1;
}
