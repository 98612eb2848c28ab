// mamba-train train CONFIG.yaml: the YAML-config trainer (one process, or --nproc ranks on this host).
#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>

#include "core/error.h"
#include "train/cli/commands.h"
#include "train/config/config.h"
#include "train/dist/launcher.h"
#include "train/dist/rendezvous.h"
#include "train/trainer.h"

namespace mt::train {

Runner add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a Mamba model from a YAML config (resumes from its checkpoints)");
  struct Opts {
    std::string config;
    std::vector<std::string> set;
    int64_t stop_at = 0;
    int nproc = 0;
    bool accept_change = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("config", o->config, "YAML config (configs/README.md lists every key)")->required();
  cmd->add_option("--nproc", o->nproc,
                  "start this many ranks on this host, one per GPU (data parallelism; default "
                  "distributed.nproc_per_node)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--set", o->set, "override one key: --set optimizer.lr=3e-4 (repeatable)");
  cmd->add_option("--stop-at-step", o->stop_at,
                  "save a checkpoint after this step and stop (a planned preemption; resume with the same command)")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  cmd->add_flag("--accept-config-change", o->accept_change,
                "resume although the config changed in keys that change the training (the changes are recorded in "
                "metrics.jsonl)");
  return [o]() {
    const DistEnv dist = dist_env_from_process();
    const TrainConfig cfg = load_train_config_file(o->config, o->set);
    const int nproc = o->nproc > 0 ? o->nproc : static_cast<int>(cfg.distributed.nproc_per_node);
    if (dist.distributed()) {
      MT_CHECK(o->nproc == 0, ErrorKind::Usage, "--nproc ", o->nproc, ": this process is already rank ", dist.rank,
               " of ", dist.world_size, " of an external launch (RANK, WORLD_SIZE set); leave --nproc out");
    } else if (nproc > 1) {
      return launch_local_ranks(nproc, child_rank_args(), std::min(10.0, cfg.distributed.timeout_s));
    }
    // Rank 0 reports; the others keep stderr (errors, warnings) and stay quiet on stdout.
    if (dist.rank > 0 && std::freopen("/dev/null", "w", stdout) == nullptr) std::perror("mamba-train: /dev/null");
    Trainer t(cfg, TrainerOptions{true, dist});
    RunOptions ro;
    ro.stop_at_step = o->stop_at;
    ro.accept_config_change = o->accept_change;
    return t.run(ro).exit_code;
  };
}

}  // namespace mt::train
