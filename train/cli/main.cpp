// mamba-train: the command-line entry point. The only place that prints errors and chooses exit codes
// (README "Exit codes"): mt::Error kinds map to documented codes; anything else is an internal error (1).
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "core/error.h"
#include "train/cli/commands.h"
#include "train/dist/launcher.h"
#include "train/version.h"

int main(int argc, char** argv) {
  mt::train::set_process_args(argc, argv);  // `train --nproc N` re-executes itself with them
  // Past a file-size limit (ulimit -f) a write must fail with EFBIG, reported as an I/O error with the checkpoint
  // intact, instead of the default SIGXFSZ killing the process mid-save.
  std::signal(SIGXFSZ, SIG_IGN);
  // Output to a terminal or pipe that has gone (a closed ssh session, a `| tee` that died) must not kill a run in the
  // middle of its last checkpoint: writes then fail with EPIPE (or EIO on a hung-up terminal) and are dropped.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"mamba-train: train and run Mamba (selective state-space) models, in C++/CUDA"};
  app.set_version_flag(
      "--version", std::string("mamba-train ") + mt::train::version() + " (commit " + mt::train::git_commit() + ")");
  app.require_subcommand(1);
  std::map<std::string, mt::train::Runner> runners;
  for (const mt::train::Command& c : mt::train::kCommands) {
    const size_t before = app.get_subcommands({}).size();
    runners[c.name] = c.add(app);
    const auto subs = app.get_subcommands({});
    if (subs.size() != before + 1 || subs.back()->get_name() != c.name) {  // a command file registered another name
      std::fprintf(stderr, "mamba-train: error: internal error: command '%s' is not registered\n", c.name);
      return static_cast<int>(mt::ErrorKind::Internal);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help / --version
    std::fprintf(stderr, "mamba-train: error: %s\n", e.what());
    std::fprintf(stderr, "run 'mamba-train --help' for usage\n");
    return static_cast<int>(mt::ErrorKind::Usage);
  }
  try {
    for (CLI::App* sub : app.get_subcommands()) return runners.at(sub->get_name())();
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
