// Process-group set-up (train/dist/rendezvous.h): the launcher environment and the TCP exchange of the communicator id,
// with ranks as threads on 127.0.0.1. Failures (a missing rank, no rank 0, mismatched world sizes) must end in an
// error naming the problem, not a hang.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "core/error.h"
#include "test_util.h"
#include "train/dist/rendezvous.h"

namespace mt::train {
namespace {

DistEnv env_of(int rank, int world, int port) {
  DistEnv e;
  e.rank = rank;
  e.world_size = world;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

using mt::test::error_of;
using mt::test::free_port;

// A getenv over `vars` (read when called, so that later changes to the map count).
std::function<const char*(const char*)> getter_of(const std::map<std::string, std::string>& vars) {
  return [&vars](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(Rendezvous, EnvironmentAbsentMeansOneProcess) {
  const DistEnv e = dist_env_from([](const char*) -> const char* { return nullptr; });
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_FALSE(e.distributed());
}

TEST(Rendezvous, EnvironmentParsedAndChecked) {
  std::map<std::string, std::string> vars = {
      {"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node07"}, {"MASTER_PORT", "29500"}};
  const auto get = getter_of(vars);
  const DistEnv e = dist_env_from(get);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node07");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_TRUE(e.distributed());

  auto expect_error = [&](const char* key, const char* value, const std::string& needle) {
    auto saved = vars;
    if (value)
      vars[key] = value;
    else
      vars.erase(key);
    const std::string msg = error_of([&] { dist_env_from(get); });
    EXPECT_NE(msg.find(needle), std::string::npos) << key << ": " << msg;
    vars = saved;
  };
  expect_error("MASTER_PORT", nullptr, "MASTER_PORT is not set");
  expect_error("RANK", "8", "RANK=8 is out of range [0, 7]");
  expect_error("WORLD_SIZE", "two", "WORLD_SIZE='two' is not an integer");
  expect_error("MASTER_PORT", "70000", "MASTER_PORT=70000 is out of range");
  expect_error("LOCAL_RANK", "-1", "LOCAL_RANK=-1 is out of range");
  expect_error("MASTER_ADDR", "", "MASTER_ADDR is empty");
}

TEST(Rendezvous, SlurmEnvironmentGivesRanksAndRankZerosHost) {
  std::map<std::string, std::string> vars = {{"SLURM_PROCID", "5"},
                                             {"SLURM_NTASKS", "8"},
                                             {"SLURM_LOCALID", "1"},
                                             {"SLURM_JOB_NODELIST", "gpu-a[07-08,11],gpu-b1"},
                                             {"SLURM_JOB_ID", "123456"}};
  const auto get = getter_of(vars);
  DistEnv e = dist_env_from(get);
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "gpu-a07");
  EXPECT_EQ(e.master_port, 23456);  // 20000 + job id % 10000
  vars["MASTER_ADDR"] = "head";
  vars["MASTER_PORT"] = "29600";
  e = dist_env_from(get);
  EXPECT_EQ(e.master_addr, "head");
  EXPECT_EQ(e.master_port, 29600);
  vars["MT_RENDEZVOUS_PORT"] = "4000";
  EXPECT_EQ(dist_env_from(get).master_port, 4000);
  vars.erase("MT_RENDEZVOUS_PORT");
  vars.erase("SLURM_LOCALID");
  EXPECT_NE(error_of([&] { dist_env_from(get); }).find("SLURM_LOCALID is not set"), std::string::npos);
  vars["SLURM_LOCALID"] = "1";
  vars["SLURM_NTASKS"] = "1";  // one task: one process
  vars["SLURM_PROCID"] = "0";
  EXPECT_FALSE(dist_env_from(get).distributed());
  // A launcher's variables win over Slurm's (--nproc inside a one-task allocation, torchrun under srun).
  vars = {{"SLURM_PROCID", "0"},  {"SLURM_NTASKS", "4"},
          {"SLURM_LOCALID", "0"}, {"RANK", "1"},
          {"WORLD_SIZE", "2"},    {"LOCAL_RANK", "1"},
          {"MASTER_ADDR", "x"},   {"MASTER_PORT", "29500"},
          {"SLURM_JOB_ID", "77"}, {"SLURM_JOB_NODELIST", "n[1-4]"}};
  e = dist_env_from(get);
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.master_port, 29500);
}

TEST(Rendezvous, FirstHostOfCompressedSlurmNodeLists) {
  EXPECT_EQ(first_slurm_host("node[01-04,07]"), "node01");
  EXPECT_EQ(first_slurm_host("node[07,01-04]"), "node07");
  EXPECT_EQ(first_slurm_host("a1,b[2-3]"), "a1");
  EXPECT_EQ(first_slurm_host("gpu[3,5]-ib,cpu1"), "gpu3-ib");
  EXPECT_EQ(first_slurm_host("rack[1-2]-n[001-016]"), "rack1-n001");
  EXPECT_EQ(first_slurm_host("127.0.0.[1-2]"), "127.0.0.1");
  EXPECT_EQ(first_slurm_host("localhost"), "localhost");
  for (const char* bad : {"", "node[01-04", "node]1[", "[a-b]x", ",n1"})
    EXPECT_NE(error_of([&] { first_slurm_host(bad); }).find("is not a Slurm node list"), std::string::npos) << bad;
}

TEST(Rendezvous, UnderTorchrunTheRendezvousLeavesMasterPortToTorchrunsStore) {
  std::map<std::string, std::string> vars = {{"RANK", "0"},
                                             {"WORLD_SIZE", "2"},
                                             {"LOCAL_RANK", "0"},
                                             {"MASTER_ADDR", "127.0.0.1"},
                                             {"MASTER_PORT", "29500"},
                                             {"TORCHELASTIC_RUN_ID", "none"}};
  const auto get = getter_of(vars);
  EXPECT_EQ(dist_env_from(get).master_port, 29501);
  vars["MT_RENDEZVOUS_PORT"] = "31000";
  EXPECT_EQ(dist_env_from(get).master_port, 31000);
  vars.erase("MT_RENDEZVOUS_PORT");
  vars.erase("TORCHELASTIC_RUN_ID");
  EXPECT_EQ(dist_env_from(get).master_port, 29500);
}

TEST(Rendezvous, EveryRankReceivesRankZerosPayload) {
  const int port = free_port(), world = 4;
  std::vector<uint8_t> id(128);
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i * 37 + 11);
  std::vector<std::vector<uint8_t>> got(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ranks;
  for (int r = world - 1; r >= 0; --r)  // the others start before rank 0 listens: they retry
    ranks.emplace_back([&, r] {
      errors[r] = error_of(
          [&] { got[r] = rendezvous_broadcast(env_of(r, world, port), r == 0 ? id : std::vector<uint8_t>{}, 30.0); });
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(errors[r], "(no error)") << "rank " << r;
    EXPECT_EQ(got[r], id) << "rank " << r;
  }
}

TEST(Rendezvous, MissingRankEndsRankZeroWithItsNumber) {
  const int port = free_port();
  std::string e0, e1;
  std::thread r1([&] { e1 = error_of([&] { rendezvous_broadcast(env_of(1, 3, port), {}, 1.0); }); });
  const auto t0 = std::chrono::steady_clock::now();
  e0 = error_of([&] { rendezvous_broadcast(env_of(0, 3, port), {1, 2, 3}, 1.0); });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r1.join();
  EXPECT_NE(e0.find("timed out with 2 of 3 ranks; missing rank(s) 2"), std::string::npos) << e0;
  EXPECT_LT(waited, 30.0) << "rank 0 should give up at its 1 s deadline, not hang";
  EXPECT_NE(e1, "(no error)");  // rank 1 never got the payload
}

TEST(Rendezvous, NoRankZeroIsAnErrorNamingTheAddress) {
  const int port = free_port();
  const std::string e = error_of([&] { rendezvous_broadcast(env_of(2, 4, port), {}, 0.5); });
  EXPECT_NE(e.find("could not reach rank 0 at 127.0.0.1:" + std::to_string(port)), std::string::npos) << e;
}

TEST(Rendezvous, MismatchedWorldSizeIsRefused) {
  const int port = free_port();
  std::string e0, e1;
  std::thread r1([&] { e1 = error_of([&] { rendezvous_broadcast(env_of(1, 4, port), {}, 5.0); }); });
  e0 = error_of([&] { rendezvous_broadcast(env_of(0, 2, port), {9}, 5.0); });
  r1.join();
  EXPECT_NE(e0.find("rank 1 says WORLD_SIZE=4, rank 0 has 2"), std::string::npos) << e0;
  EXPECT_NE(e1, "(no error)");
}

}  // namespace
}  // namespace mt::train
