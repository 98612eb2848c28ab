// `mamba-train train CONFIG --nproc N` (or distributed.nproc_per_node: N): one process per GPU on this host.
//
// The launcher re-executes this binary N times with the environment a torchrun / Slurm launch would give
// (RANK = LOCAL_RANK = r, WORLD_SIZE = N, MASTER_ADDR = 127.0.0.1, MASTER_PORT = a free port, or the caller's
// MASTER_PORT) and the same arguments. Each child dies with the launcher (PR_SET_PDEATHSIG).
//
// Failure handling (docs/DESIGN.md F8): the first rank to fail (a non-zero exit, or killed by a signal) is named on
// stderr (a rank that fails because a peer vanished makes the launcher look for that peer's death first), the others
// get SIGTERM, and whatever is still alive grace_s later (min(10 s, distributed.timeout_s)) gets SIGKILL, so a dead or
// frozen rank never leaves the job hanging. SIGINT / SIGTERM / SIGHUP sent to the launcher are forwarded to every
// rank, which agree on a step, write one checkpoint and exit 130 / 143 / 129 (SIGHUP is left alone under nohup).
// The ranks' stderr comes through the launcher (train/dist/error_relay.h): an error line that several ranks print
// alike (a config or data error every rank finds) appears once.
//
// Exit code: 0 when every rank exited 0; 128 + the signal after a stop (the ranks agree on the signal, too); else the
// first failing rank's exit code, or 8 (distributed failure) when it was killed by a signal.
#pragma once

#include <string>
#include <vector>

namespace mt::train {

// argv of this process (main() records it) and the arguments for a child rank: argv without "--nproc N".
void set_process_args(int argc, char** argv);
const std::vector<std::string>& process_args();
std::vector<std::string> child_rank_args();

int launch_local_ranks(int nproc, const std::vector<std::string>& args, double grace_s);

}  // namespace mt::train
