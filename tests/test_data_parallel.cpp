// Data parallelism (issue 7) on the CPU: the control plane and the gradient buckets with ranks as threads, and whole
// `mamba-train train --nproc 2` jobs against one process (the TCP backend; NCCL runs the same trainer code on GPUs).
// A killed or frozen rank must end the job with exit code 8 and a message naming it, never a hang.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "cli_util.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"
#include "train/dist/error_relay.h"
#include "train/dist/grad_sync.h"
#include "train/dist/rendezvous.h"

extern char** environ;

namespace mt::train {
namespace {

using mt::test::contains;
using mt::test::error_of;
using mt::test::free_port;

DistEnv env_of(int rank, int world, int port) {
  DistEnv e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

// Runs fn(rank) on `world` threads; returns each rank's error message ("" when it returned normally).
std::vector<std::string> on_ranks(int world, const std::function<void(int)>& fn) {
  std::vector<std::string> err(static_cast<size_t>(world));
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r)
    th.emplace_back([&, r] {
      const std::string e = error_of([&] { fn(r); });
      err[static_cast<size_t>(r)] = e == "(no error)" ? "" : e;
    });
  for (auto& t : th) t.join();
  return err;
}

TEST(DataParallel, TheLauncherRelaysRankErrorsOnceEach) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  {
    ErrorLineRelay relay(p[1], 2);
    auto add = [&](int r, const std::string& t) { relay.add(r, t.data(), t.size()); };
    add(0, "note: 1\nmamba-train: error: bad con");
    add(1, "mamba-train: error: bad config\nmamba-train: error: rank 1 only\n");
    add(0, "fig\n");                             // rank 0's line, completed: the same as rank 1's
    add(1, "mamba-train: error: bad config\n");  // even from the same rank
    add(0, "note: 1\n");                         // other lines are never merged
    add(1, "no newline at the end");
    relay.finish(1);
    relay.finish(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  EXPECT_EQ(out,
            "note: 1\nmamba-train: error: bad config\nmamba-train: error: rank 1 only\nnote: 1\nno newline at the "
            "end");
}

TEST(DataParallel, BucketsTakeParametersInReverseAndNeverSplitOne) {
  // 4-byte floats: numels 10, 20, 30, 40, 50 with 100-byte buckets -> [4 (200 B)], [3 (160 B)], [2 (120 B)], [1, 0].
  const auto b = plan_buckets({10, 20, 30, 40, 50}, 100);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0], (std::vector<size_t>{4}));
  EXPECT_EQ(b[1], (std::vector<size_t>{3}));
  EXPECT_EQ(b[2], (std::vector<size_t>{2}));
  EXPECT_EQ(b[3], (std::vector<size_t>{1, 0}));
  const auto one = plan_buckets({10, 20, 30}, int64_t{1} << 30);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], (std::vector<size_t>{2, 1, 0}));
}

TEST(DataParallel, ControlPlaneSumsInRankOrderAndBroadcasts) {
  const int port = free_port(), world = 3;
  std::vector<std::vector<float>> got(world);
  std::vector<std::vector<uint8_t>> bc(world);
  auto errs = on_ranks(world, [&](int r) {
    ControlPlane cp(env_of(r, world, port), 20);
    // Values whose float sum depends on the order: (1e8 + 1) + -1e8 = 0 in f32, but 1e8 + (1 + -1e8) = 0 too; use
    // 0.1-steps instead and compare with the rank-order sum computed here.
    std::vector<float> v = {0.1f * static_cast<float>(r + 1), 1e-8f * static_cast<float>(r), static_cast<float>(r)};
    cp.all_reduce_sum(v.data(), v.size(), "test sum");
    got[static_cast<size_t>(r)] = v;
    std::vector<uint8_t> payload = r == 0 ? std::vector<uint8_t>{7, 8, 9, 10} : std::vector<uint8_t>{};
    bc[static_cast<size_t>(r)] = cp.broadcast(payload, "test broadcast");
    cp.barrier("test barrier");
  });
  for (const auto& e : errs) EXPECT_EQ(e, "");
  const float want0 = (0.1f * 1 + 0.1f * 2) + 0.1f * 3;
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(got[r].size(), 3u);
    EXPECT_EQ(got[r][0], want0);  // bit-equal on every rank
    EXPECT_EQ(got[r][2], 3.0f);
    EXPECT_EQ(got[r], got[0]);
    EXPECT_EQ(bc[r], (std::vector<uint8_t>{7, 8, 9, 10}));
  }
}

TEST(DataParallel, RanksAtDifferentCollectivesAreNamed) {
  const int port = free_port();
  auto errs = on_ranks(2, [&](int r) {
    ControlPlane cp(env_of(r, 2, port), 20);
    double x[2] = {1, 2};
    if (r == 0)
      cp.all_reduce_sum(x, 2, "loss of step 7");
    else
      cp.all_reduce_sum(x, 1, "scored-token count of step 8");
  });
  EXPECT_TRUE(contains(errs[0], "rank 1 is at collective #1 'scored-token count of step 8'")) << errs[0];
  EXPECT_TRUE(contains(errs[0], "the ranks disagree")) << errs[0];
  EXPECT_NE(errs[1], "");  // rank 0 gave up: rank 1 sees the connection close
}

TEST(DataParallel, ADeadPeerEndsTheCollectiveWithItsRank) {
  const int port = free_port();
  auto errs = on_ranks(3, [&](int r) {
    ControlPlane cp(env_of(r, 3, port), 20);
    if (r == 2) return;  // leaves: its connection closes as a killed process's would
    float v = 1;
    cp.all_reduce_sum(&v, 1, "all-reduce of gradient bucket 0");
  });
  EXPECT_TRUE(contains(errs[0], "rank 0 of 3: all-reduce of gradient bucket 0")) << errs[0];
  EXPECT_TRUE(contains(errs[0], "rank 2: the peer closed the connection")) << errs[0];
  EXPECT_NE(errs[1], "");
  EXPECT_EQ(errs[2], "");
}

TEST(DataParallel, ASilentPeerTimesOutNamingTheTimeout) {
  const int port = free_port();
  std::atomic<bool> release{false};
  auto errs = on_ranks(2, [&](int r) {
    ControlPlane cp(env_of(r, 2, port), 20);
    cp.set_timeout_s(0.3);
    if (r == 1) {  // frozen: neither sends nor closes until rank 0 gave up
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return;
    }
    double v = 1;
    const std::string e = error_of([&] { cp.all_reduce_sum(&v, 1, "loss of step 3"); });
    release = true;
    if (!e.empty()) throw Error(ErrorKind::Distributed, e);
  });
  EXPECT_TRUE(contains(errs[0], "rank 1: timed out receiving after 0.3 s (distributed.timeout_s)")) << errs[0];
  EXPECT_TRUE(contains(errs[0], "loss of step 3")) << errs[0];
}

TEST(DataParallel, GradientBucketsSumDuringBackward) {
  // Three parameters in buckets of one each; rank r's loss is sum((r + 1) * p_k * k): gradients (r + 1) * k summed
  // over ranks = 3 * k for two ranks. Buckets launch from the grad-ready hooks, i.e. during backward.
  const int port = free_port();
  std::vector<std::vector<double>> g(2);
  std::vector<int> early(2);
  auto errs = on_ranks(2, [&](int r) {
    ControlPlane cp(env_of(r, 2, port), 20);
    std::vector<Tensor> p;
    for (int k = 0; k < 3; ++k) {
      p.push_back(Tensor::ones({4}, DType::F32));
      set_requires_grad(p.back(), true, "p" + std::to_string(k));
    }
    std::vector<Tensor*> pp = {&p[0], &p[1], &p[2]};
    GradSync sync(pp, make_grad_backend("tcp", cp, Device::cpu(), 12), /*bucket_bytes=*/1);
    EXPECT_EQ(sync.num_buckets(), 3);
    Tensor loss;
    for (int k = 0; k < 3; ++k) {
      Tensor t = sum(mul_scalar(p[k], (r + 1) * k));
      loss = loss.defined() ? add(loss, t) : t;
    }
    sync.arm();
    backward(loss);
    sync.finish();
    early[r] = sync.launched_during_backward();
    for (int k = 0; k < 3; ++k) g[r].push_back(grad(p[k]).to_vector()[0]);
  });
  for (const auto& e : errs) EXPECT_EQ(e, "");
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(g[r], (std::vector<double>{0, 3, 6})) << "rank " << r;
    EXPECT_EQ(early[r], 3) << "rank " << r;
  }
}

// ---- whole jobs ----

struct Job {
  test::CliResult r;
  std::string dir;
};

const std::string kTiny =
    "train configs/selective_copying.yaml --set trainer.max_steps=12 --set trainer.eval_every=0 "
    "--set trainer.eval_batches=2 --set trainer.log_every=1 --set logging.progress=false --set logging.plot=false "
    "--set checkpoint.resume=never --set trainer.global_batch_size=16 --set scheduler.warmup_steps=2 ";

Job train(const std::string& tag, const std::string& extra, const std::string& prefix = "",
          const char* binary = MT_BINARY) {
  Job run;
  run.dir = test::temp_dir(tag);
  const std::string cmd = "cd '" + std::string(MT_SOURCE_DIR) + "' && OMP_NUM_THREADS=1 " + prefix + " " + binary +
                          " " + kTiny + "--set run.out_dir=" + run.dir + " " + extra + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) run.r.out.append(buf, n);
  const int st = p ? pclose(p) : -1;
  run.r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return run;
}

std::vector<double> losses(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("loss") && j["loss"].is_number()) out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::map<std::string, Tensor> final_params(const std::string& dir) {
  const std::string ck = latest_checkpoint(dir + "/checkpoints");
  EXPECT_NE(ck, "") << dir;
  std::map<std::string, Tensor> out;
  if (ck.empty()) return out;
  for (auto& kv : load_checkpoint(ck).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first] = kv.second;
  return out;
}

void expect_bit_equal(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (auto& kv : a) {
    auto it = b.find(kv.first);
    ASSERT_NE(it, b.end()) << kv.first;
    EXPECT_EQ(kv.second.to_vector(), it->second.to_vector()) << kv.first;
  }
}

TEST(DataParallel, TwoRanksFollowOneProcessBitForBit) {
  // Global batch 16: one process accumulates two micro-batches of 8; two ranks take one each. Both sum the same two
  // gradients in the same order, so every loss and every final parameter agree to the bit.
  Job one = train("dp_one", "--set trainer.micro_batch_size=8");
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  Job two = train("dp_two", "--set trainer.micro_batch_size=8 --nproc 2");
  ASSERT_EQ(two.r.code, 0) << two.r.out;
  EXPECT_TRUE(contains(two.r.out, "distributed: 2 ranks, gradients over tcp")) << two.r.out;
  const auto l1 = losses(one.dir), l2 = losses(two.dir);
  ASSERT_EQ(l1.size(), 12u);
  EXPECT_EQ(l1, l2);
  expect_bit_equal(final_params(one.dir), final_params(two.dir));
  // Only rank 0 wrote: one metrics record per step.
  EXPECT_EQ(l2.size(), 12u);
}

TEST(DataParallel, TwoRanksFollowOneProcessBitForBitWithDropout) {
  // model.dropout draws each micro-batch's masks from its first sample index, so rank 1 draws for micro-batch 1 what
  // the single process draws for it.
  const std::string drop = "--set trainer.micro_batch_size=8 --set model.dropout=0.3";
  Job plain = train("dp_plain", "--set trainer.micro_batch_size=8");
  ASSERT_EQ(plain.r.code, 0) << plain.r.out;
  Job one = train("dp_one_drop", drop);
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  Job two = train("dp_two_drop", drop + " --nproc 2");
  ASSERT_EQ(two.r.code, 0) << two.r.out;
  const auto l0 = losses(plain.dir), l1 = losses(one.dir), l2 = losses(two.dir);
  ASSERT_EQ(l1.size(), 12u);
  EXPECT_NE(l1, l0);
  EXPECT_EQ(l1, l2);
  expect_bit_equal(final_params(one.dir), final_params(two.dir));
}

TEST(DataParallel, TwoRanksWithAccumulationFollowOneProcessWithinRounding) {
  // Micro-batches of 4: one process sums four gradients in a row, the ranks two each and then their sums.
  Job one = train("dp_one4", "--set trainer.micro_batch_size=4");
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  Job two = train("dp_two4", "--set trainer.micro_batch_size=4 --nproc 2 --set distributed.bucket_mb=0.01");
  ASSERT_EQ(two.r.code, 0) << two.r.out;
  const auto l1 = losses(one.dir), l2 = losses(two.dir);
  ASSERT_EQ(l1.size(), 12u);
  ASSERT_EQ(l2.size(), 12u);
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l1[i], l2[i], 1e-4 * std::abs(l1[i])) << "step " << i + 1;
}

TEST(DataParallel, ResumeWithAnotherWorldSizeContinuesExactly) {
  // Data order is a function of the global sample index, not of the ranks: stop 2 ranks at step 6, resume on one
  // process, and end where an uninterrupted single process ends.
  Job one = train("dp_ref", "--set trainer.micro_batch_size=8");
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  Job part = train("dp_part", "--set trainer.micro_batch_size=8 --nproc 2 --stop-at-step 6");
  ASSERT_EQ(part.r.code, 0) << part.r.out;
  const std::string cont = "cd '" + std::string(MT_SOURCE_DIR) + "' && OMP_NUM_THREADS=1 " + MT_BINARY + " " + kTiny +
                           "--set run.out_dir=" + part.dir +
                           " --set trainer.micro_batch_size=8 --set checkpoint.resume=auto 2>&1";
  const int st = std::system(cont.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  expect_bit_equal(final_params(one.dir), final_params(part.dir));
}

TEST(DataParallel, AKilledRankEndsTheJobNamingIt) {
  Job run = train("dp_kill", "--set trainer.micro_batch_size=8 --nproc 2 --set checkpoint.every=2",
                  "MT_FAULT='step_end=3@1:kill'", MT_FAULTS_BINARY);
  EXPECT_EQ(run.r.code, 8) << run.r.out;
  EXPECT_TRUE(contains(run.r.out, "mamba-train: error: rank 1 of 2 was killed by signal 9")) << run.r.out;
  EXPECT_TRUE(contains(run.r.out, "rank 0 of 2:")) << run.r.out;  // the survivor's own error names the collective
  // The checkpoint of step 2 was published before the failure and verifies.
  const test::CliResult v = test::run_cli("checkpoint verify " + run.dir);
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_TRUE(contains(v.out, "ckpt-00000002.h5")) << v.out;
}

TEST(DataParallel, AFrozenRankEndsTheJobWithinTheTimeout) {
  Job run = train("dp_freeze", "--set trainer.micro_batch_size=8 --nproc 2 --set distributed.timeout_s=2",
                  "MT_FAULT='step_end=3@1:stop'", MT_FAULTS_BINARY);
  EXPECT_EQ(run.r.code, 8) << run.r.out;
  EXPECT_TRUE(contains(run.r.out, "rank 1: timed out receiving after 2 s (distributed.timeout_s)")) << run.r.out;
  EXPECT_TRUE(contains(run.r.out, "rank 0 of 2 exited with code 8; stopping the other 1 rank(s)")) << run.r.out;
}

TEST(DataParallel, ASignalledRankStopsEveryRankAtOneStep) {
  // SIGTERM reaches rank 1 only (after step 4): the ranks vote at the end of step 5 and all stop there, rank 0 writes
  // one checkpoint, the job exits 143.
  Job run =
      train("dp_term", "--set trainer.micro_batch_size=8 --nproc 2", "MT_FAULT='step_end=4@1:term'", MT_FAULTS_BINARY);
  EXPECT_EQ(run.r.code, 143) << run.r.out;
  EXPECT_TRUE(contains(run.r.out, "stopped by SIGTERM at step 5")) << run.r.out;
  const test::CliResult v = test::run_cli("checkpoint verify " + run.dir);
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_TRUE(contains(v.out, "ckpt-00000005.h5")) << v.out;
}

// Runs `shell` (a command line for /bin/sh) from the source tree; returns its exit code and output.
test::CliResult run_shell(const std::string& shell) {
  test::CliResult r{-1, ""};
  FILE* p = popen(("cd '" + std::string(MT_SOURCE_DIR) + "' && { " + shell + "; } 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = p ? pclose(p) : -1;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Two ranks started as a launcher we do not own would: the same command, each with its own environment prefix.
// Prints "codes A B" at the end.
std::string two_ranks(const std::string& env0, const std::string& env1, const std::string& dir) {
  const std::string cmd = std::string(MT_BINARY) + " " + kTiny + "--set run.out_dir=" + dir +
                          " --set trainer.micro_batch_size=8 --set distributed.timeout_s=60";
  return "OMP_NUM_THREADS=1 " + env1 + " " + cmd + " > " + dir + ".rank1.log 2>&1 & p1=$!; OMP_NUM_THREADS=1 " + env0 +
         " " + cmd + "; c0=$?; wait $p1; c1=$?; cat " + dir + ".rank1.log; echo \"codes $c0 $c1\"";
}

TEST(DataParallel, SlurmTasksFindTheirRanksAndRankZerosHost) {
  // srun's variables only (no RANK / WORLD_SIZE): rank, world size and local rank from SLURM_*, rank 0's address from
  // the compressed node list. The job follows one process bit for bit.
  Job one = train("slurm_ref", "--set trainer.micro_batch_size=8");
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  const std::string dir = test::temp_dir("slurm");
  const std::string common =
      "SLURM_NTASKS=2 SLURM_JOB_NODELIST='127.0.0.[1-2]' SLURM_JOB_ID=4242 MASTER_PORT=" + std::to_string(free_port());
  const test::CliResult r =
      run_shell(two_ranks(common + " SLURM_PROCID=0 SLURM_LOCALID=0", common + " SLURM_PROCID=1 SLURM_LOCALID=1", dir));
  EXPECT_TRUE(contains(r.out, "codes 0 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "distributed: 2 ranks, gradients over tcp")) << r.out;
  expect_bit_equal(final_params(one.dir), final_params(dir));
  std::filesystem::remove_all(dir);
}

TEST(DataParallel, UnderTorchrunTheRendezvousAvoidsTorchrunsStorePort) {
  // torchrun's agent store listens on MASTER_PORT (here: a socket this test holds); the ranks meet on
  // MASTER_PORT + 1.
  int store = -1, port = 0;
  for (int attempt = 0; attempt < 20 && store < 0; ++attempt) {
    port = free_port();
    const int s = ::socket(AF_INET, SOCK_STREAM, 0), t = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    sockaddr_in b = a;
    b.sin_port = htons(static_cast<uint16_t>(port + 1));
    const bool next_free = ::bind(t, reinterpret_cast<sockaddr*>(&b), sizeof b) == 0;
    ::close(t);
    if (next_free && ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(s, 4) == 0)
      store = s;
    else
      ::close(s);
  }
  ASSERT_GE(store, 0);
  const std::string dir = test::temp_dir("torchrun");
  const std::string common =
      "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " TORCHELASTIC_RUN_ID=none";
  const test::CliResult r = run_shell(two_ranks(common + " RANK=0 LOCAL_RANK=0", common + " RANK=1 LOCAL_RANK=1", dir));
  ::close(store);
  EXPECT_TRUE(contains(r.out, "codes 0 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "distributed: 2 ranks")) << r.out;
  EXPECT_EQ(losses(dir).size(), 12u);
  std::filesystem::remove_all(dir);
}

TEST(DataParallel, TheSbatchExampleRunsAsWritten) {
  // configs/slurm/train.sbatch with a stand-in srun that starts SLURM_NTASKS tasks the way srun does (SLURM_PROCID,
  // SLURM_LOCALID per task; srun's own options skipped).
  const std::string dir = test::temp_dir("sbatch");
  std::ofstream(dir + "/srun") << "#!/bin/bash\n"
                                  "while [[ $1 == -* ]]; do shift; done\n"
                                  "pids=()\n"
                                  "for ((r = 0; r < SLURM_NTASKS; r++)); do\n"
                                  "  SLURM_PROCID=$r SLURM_LOCALID=$r \"$@\" > \"$SRUN_LOG.$r\" 2>&1 & pids+=($!)\n"
                                  "done\n"
                                  "rc=0\n"
                                  "for p in \"${pids[@]}\"; do wait $p || rc=$?; done\n"
                                  "cat \"$SRUN_LOG\".*\n"
                                  "exit $rc\n";
  std::filesystem::permissions(dir + "/srun", std::filesystem::perms::owner_all);
  const test::CliResult r =
      run_shell("PATH='" + dir + "':$PATH SRUN_LOG='" + dir + "/task' MAMBA_TRAIN='" + MT_BINARY +
                "' SLURM_NTASKS=2 SLURM_JOB_NODELIST=localhost SLURM_JOB_ID=1 SLURM_CPUS_PER_TASK=1 MASTER_PORT=" +
                std::to_string(free_port()) + " bash configs/slurm/train.sbatch " + kTiny.substr(6) +
                "--set run.out_dir=" + dir + "/run --set trainer.micro_batch_size=8 --set distributed.timeout_s=60");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "distributed: 2 ranks")) << r.out;
  EXPECT_EQ(losses(dir + "/run").size(), 12u);
  std::filesystem::remove_all(dir);
}

int error_lines(const std::string& out) {
  int n = 0;
  for (size_t at = out.find("mamba-train: error:"); at != std::string::npos;
       at = out.find("mamba-train: error:", at + 1))
    ++n;
  return n;
}

TEST(DataParallel, ABatchThatDoesNotSplitIsRefused) {
  // Every rank finds the error; the launcher prints it once.
  Job run = train("dp_split", "--set trainer.micro_batch_size=16 --nproc 2");
  EXPECT_EQ(run.r.code, 3) << run.r.out;
  EXPECT_TRUE(contains(run.r.out,
                       "mamba-train: error: trainer.global_batch_size (16) must be a multiple of "
                       "trainer.micro_batch_size (16) x WORLD_SIZE (2)"))
      << run.r.out;
  EXPECT_EQ(error_lines(run.r.out), 1) << run.r.out;
}

TEST(DataParallel, ADataErrorEveryRankFindsIsPrintedOnce) {
  const std::string dir = test::temp_dir("dp_data");
  const std::string gz = dir + "/cut.txt.gz";
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i * 7919 % 10007) + "\n";
  std::ofstream(dir + "/c.txt") << text;
  ASSERT_EQ(std::system(("gzip -c " + dir + "/c.txt | head -c 2000 > " + gz).c_str()), 0);
  const test::CliResult r = test::run_cli("train configs/tinyshakespeare.yaml --nproc 2 --set data.path=" + gz +
                                          " --set run.device=cpu --set run.out_dir=" + dir + "/run");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: data.path: " + gz + ": truncated gzip data")) << r.out;
  EXPECT_EQ(error_lines(r.out), 1) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(DataParallel, ASighupToTheLauncherStopsEveryRankAtOneStep) {
  // A closed terminal sends SIGHUP to the launcher: it forwards it, the ranks agree on a step, rank 0 writes one
  // checkpoint, the job exits 129.
  const std::string dir = test::temp_dir("dp_hup");
  const std::string log = dir + "/out.log";
  const std::string cmd = "cd '" + std::string(MT_SOURCE_DIR) + "' && OMP_NUM_THREADS=1 exec " + MT_BINARY + " " +
                          kTiny + "--set trainer.max_steps=100000 --set trainer.micro_batch_size=8 --nproc 2 " +
                          "--set checkpoint.every=2 --set run.out_dir=" + dir + "/run > " + log + " 2>&1";
  pid_t pid = 0;
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  const std::string first = dir + "/run/checkpoints/" + checkpoint_file_name(2) + ".sha256";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(first) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(std::filesystem::exists(first));
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(st)) << out;
  EXPECT_EQ(WEXITSTATUS(st), 129) << out;
  EXPECT_TRUE(contains(out, "stopped by SIGHUP at step ")) << out;
  EXPECT_EQ(error_lines(out), 0) << out;
  const test::CliResult v = test::run_cli("checkpoint verify " + dir + "/run");
  EXPECT_EQ(v.code, 0) << v.out;
  const size_t at = out.find("stopped by SIGHUP at step ");
  const int64_t step = std::atoll(out.c_str() + at + 26);
  EXPECT_TRUE(contains(v.out, "latest valid: " + dir + "/run/checkpoints/" + checkpoint_file_name(step))) << v.out;
  std::filesystem::remove_all(dir);
}

TEST(DataParallel, TwoRanksWithChunkedSequencesFollowOneProcessBitForBit) {
  // trainer.chunk_len: every micro-batch's backward is one pass per chunk, the last chunk first; the all-reduce is
  // armed for the step's last pass (chunk 0 of the last micro-batch). One process and two ranks still sum the same
  // gradients in the same order.
  const std::string chunked = "--set trainer.micro_batch_size=8 --set trainer.chunk_len=7 ";
  Job one = train("dp_chunk_one", chunked);
  ASSERT_EQ(one.r.code, 0) << one.r.out;
  Job two = train("dp_chunk_two", chunked + "--nproc 2 --set distributed.bucket_mb=0.01");
  ASSERT_EQ(two.r.code, 0) << two.r.out;
  const auto l1 = losses(one.dir), l2 = losses(two.dir);
  ASSERT_EQ(l1.size(), 12u);
  EXPECT_EQ(l1, l2);
  expect_bit_equal(final_params(one.dir), final_params(two.dir));
}

}  // namespace
}  // namespace mt::train
