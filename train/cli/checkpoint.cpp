// mamba-train checkpoint verify RUN_DIR|CKPT_DIR|FILE: verify every checkpoint, name the newest valid one.
// Exit 0 when the newest checkpoint verifies, 13 (ErrorKind::NewestCheckpointInvalid) when a newer one than the newest
// valid one is damaged, 5 when none verifies.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"
#include "train/ckpt/checkpoint.h"
#include "train/cli/commands.h"

namespace mt::train {

Runner add_checkpoint_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("checkpoint", "Inspect training checkpoints");
  auto* verify = cmd->add_subcommand("verify", "Verify every checkpoint of a run; print the newest valid one");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  verify->add_option("path", *path, "run directory, checkpoint directory or checkpoint file")->required();
  return [path]() {
    std::error_code ec;
    MT_CHECK(std::filesystem::exists(*path, ec), ErrorKind::Checkpoint, "checkpoint verify: '", *path,
             "': no such file or directory");
    if (!std::filesystem::is_directory(*path, ec)) {
      const std::string why = verify_checkpoint(*path);
      MT_CHECK(why.empty(), ErrorKind::Checkpoint, "checkpoint '", *path, "': ", why);
      std::printf("ok %s\n", path->c_str());
      return 0;
    }
    const std::string dir = checkpoint_dir_of(*path);
    int64_t valid = 0, invalid = 0;
    std::vector<std::pair<int64_t, std::string>> found;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      const int64_t st = checkpoint_step_from_name(name);
      if (st >= 0) found.emplace_back(st, name);
    }
    MT_CHECK(!ec, ErrorKind::Io, "cannot list '", dir, "': ", ec.message());
    std::sort(found.begin(), found.end());
    // The newest published checkpoint (its manifest in place) that does not verify, if it is newer than every valid
    // one. A file without a manifest is the debris of a save that was interrupted: never published, removed by the
    // next save, not a damaged checkpoint.
    std::string newest_bad, newest_bad_why;
    for (const auto& f : found) {
      const std::string p = dir + "/" + f.second;
      const std::string why = verify_checkpoint(p);
      if (why.empty()) {
        ++valid;
        newest_bad.clear();
        std::printf("ok      %s\n", p.c_str());
      } else if (!std::filesystem::exists(p + ".sha256", ec)) {
        std::printf(
            "partial %s: no manifest: a save that did not finish (never published; the next save "
            "removes it)\n",
            p.c_str());
      } else {
        ++invalid;
        newest_bad = p;
        newest_bad_why = why;
        std::printf("INVALID %s: %s\n", p.c_str(), why.c_str());
      }
    }
    const std::string newest = latest_checkpoint(dir);
    MT_CHECK(!newest.empty(), ErrorKind::Checkpoint, "no valid checkpoint in '", dir, "' (", invalid, " invalid)");
    std::printf("latest valid: %s (%lld valid, %lld invalid)\n", newest.c_str(), (long long)valid, (long long)invalid);
    MT_CHECK(newest_bad.empty(), ErrorKind::NewestCheckpointInvalid, "the newest checkpoint '", newest_bad,
             "' is invalid (", newest_bad_why, "); the newest valid one is '", newest,
             "' (a resume with checkpoint.resume: auto continues from it)");
    return 0;
  };
}

}  // namespace mt::train
