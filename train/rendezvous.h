// Process-group set-up for data parallelism (issue 7): where a rank learns who it is, and how the ranks exchange the
// one blob that starts a communicator (an NCCL unique id) over TCP, the way torchrun and Slurm jobs expect.
//
// Environment (torchrun's names): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. None set: one process.
// Any of them set: all five must be, with 0 <= RANK < WORLD_SIZE, 0 <= LOCAL_RANK, 1 <= MASTER_PORT <= 65535.
//
// Rendezvous: rank 0 listens on MASTER_ADDR:MASTER_PORT; every other rank connects (retrying until the deadline),
// sends a hello {magic, world size, rank}, and receives the payload. Rank 0 refuses a hello with another world size
// or a rank it already has, and fails when the deadline passes before all ranks arrived, naming the missing ones;
// the others fail naming the address when they cannot reach rank 0 in time. Never a hang: every socket operation
// is bounded by the deadline.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mt::train {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;  // empty for one process
  int master_port = 0;
  bool distributed() const { return world_size > 1 || !master_addr.empty(); }
};

// getenv is injectable for tests. mt::Error(Config) naming the variable and its value on any problem.
DistEnv dist_env_from(const std::function<const char*(const char*)>& getenv);
DistEnv dist_env_from_process();

// Rank 0 passes the payload and returns it; the others pass anything and return rank 0's. mt::Error(Distributed) on a
// timeout, a refused hello, or a socket error, naming the address, the rank and what failed.
std::vector<uint8_t> rendezvous_broadcast(const DistEnv& env, const std::vector<uint8_t>& payload, double timeout_s);

}  // namespace mt::train
