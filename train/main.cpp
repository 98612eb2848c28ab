// mamba-train: the command-line entry point. The only place that prints errors and chooses exit codes
// (README "Exit codes"): mt::Error kinds map to documented codes; anything else is an internal error (1).
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <map>

#include "core/error.h"
#include "train/commands.h"
#include "train/launcher.h"

int main(int argc, char** argv) {
  mt::train::set_process_args(argc, argv);  // `train --nproc N` re-executes itself with them
  // Past a file-size limit (ulimit -f) a write must fail with EFBIG, reported as an I/O error with the checkpoint
  // intact, instead of the default SIGXFSZ killing the process mid-save.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"mamba-train: train and run Mamba (selective state-space) models, in C++/CUDA"};
  app.set_version_flag("--version", "mamba-train 0.1.0");
  app.require_subcommand(1);
  std::map<CLI::App*, mt::train::Runner> runners;
  auto add = [&](mt::train::Runner (*fn)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    mt::train::Runner r = fn(app);
    runners[app.get_subcommands({})[before]] = r;
  };
  add(mt::train::add_info_command);
  add(mt::train::add_forward_command);
  add(mt::train::add_demo_command);
  add(mt::train::add_train_command);
  add(mt::train::add_bench_command);
  add(mt::train::add_export_command);
  add(mt::train::add_checkpoint_command);
  add(mt::train::add_prepare_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help / --version
    std::fprintf(stderr, "mamba-train: error: %s\n", e.what());
    std::fprintf(stderr, "run 'mamba-train --help' for usage\n");
    return static_cast<int>(mt::ErrorKind::Usage);
  }
  try {
    for (auto& kv : runners)
      if (kv.first->parsed()) return kv.second();
    return 0;
  } catch (const mt::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mamba-train: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "mamba-train: error: out of host memory\n");
    return static_cast<int>(mt::ErrorKind::OutOfMemory);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mamba-train: error: internal error: %s\n", e.what());
    return static_cast<int>(mt::ErrorKind::Internal);
  }
}
