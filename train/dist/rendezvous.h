// Process-group set-up for data parallelism (issue 7): where a rank learns who it is, and how the ranks exchange the
// one blob that starts a communicator (an NCCL unique id) over TCP, the way torchrun and Slurm jobs expect.
//
// Environment, first match wins:
//   torchrun / our --nproc launcher: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Any of them set (but
//     not under Slurm without RANK, WORLD_SIZE and LOCAL_RANK, below): all five must be, with 0 <= RANK <
//     WORLD_SIZE, 0 <= LOCAL_RANK, 1 <= MASTER_PORT <= 65535. Under torchrun (TORCHELASTIC_RUN_ID set) torchrun's own
//     store already listens on MASTER_PORT, so the rendezvous uses MASTER_PORT + 1.
//   Slurm (srun, one task per GPU; RANK, WORLD_SIZE and LOCAL_RANK unset): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID;
//     rank 0's address is MASTER_ADDR when set, else the first host of SLURM_JOB_NODELIST (SLURM_NODELIST), whose
//     compressed forms ("node[01-04,07]", "gpu[3,5]-ib,cpu1") are expanded as far as the first host; the port is
//     MASTER_PORT when set, else 20000 + SLURM_JOB_ID % 10000 (29500 without a job id), so that jobs sharing a node
//     differ. SLURM_NTASKS 1: one process.
//   None of these: one process.
// MT_RENDEZVOUS_PORT, when set, is the rendezvous port in every case.
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

// The first host of a Slurm node list ("node[01-04,07],gpu5" -> "node01"). mt::Error(Config) naming the list when it
// is empty or its brackets do not match.
std::string first_slurm_host(const std::string& nodelist);

// Rank 0 passes the payload and returns it; the others pass anything and return rank 0's. mt::Error(Distributed) on a
// timeout, a refused hello, or a socket error, naming the address, the rank and what failed.
std::vector<uint8_t> rendezvous_broadcast(const DistEnv& env, const std::vector<uint8_t>& payload, double timeout_s);

// The job's CPU-side control plane: the rendezvous connections kept open (a star around rank 0). Carries the small
// collectives of a step (scored-token counts, the loss, the stop vote), the barrier around checkpoint I/O, and
// broadcasts (the checkpoint to resume from, the NCCL id); the TCP gradient backend reduces buckets over it too.
//
// Every collective: each peer sends {sequence number, type, size, what} and its data to rank 0; rank 0 checks that
// all ranks are at the same collective (else an error naming both), sums in rank order (0 + 1 + 2 ..., so every
// rank gets the same bits, run after run) and sends the result back. Each collective is bounded by timeout_s: a rank
// that died (connection closed) or hangs (no data before the deadline) ends the others with mt::Error(Distributed)
// naming this rank, the peer, the collective and the timeout. Not thread-safe: one collective at a time.
// world_size 1: every call returns at once with the data unchanged.
class ControlPlane {
 public:
  ControlPlane(const DistEnv& env, double timeout_s);  // connects (the rendezvous); same errors as above
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double t) { timeout_s_ = t; }

  void all_reduce_sum(float* v, size_t n, const std::string& what);
  void all_reduce_sum(double* v, size_t n, const std::string& what);
  void barrier(const std::string& what);
  std::vector<uint8_t> broadcast(const std::vector<uint8_t>& from_root, const std::string& what);

 private:
  void exchange(uint32_t type, void* data, size_t bytes, const std::string& what,
                const std::function<void(const void* peer_data, size_t peer_bytes)>& combine);
  std::string fail_prefix(const std::string& what) const;
  DistEnv env_;
  double timeout_s_;
  std::vector<int> fds_;  // rank 0: one per peer (index = rank, [0] unused); others: [0] = rank 0
  uint64_t seq_ = 0;
};

}  // namespace mt::train
