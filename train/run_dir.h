// The run directory of `mamba-train train` (run.out_dir): one trainer at a time, checked before the first step,
// resumed only under the rules below, and recorded.
//
// Lock: rank 0 holds an exclusive flock(2) on <out_dir>/run.lock (and on <checkpoint.dir>/run.lock when the
// checkpoints live outside the run directory) from before the data and the model are built until the process exits;
// the file holds "pid <pid> host <host> since <UTC time>" of the holder. A second trainer is refused at once with
// ErrorKind::RunLocked (exit 12) naming that holder. The lock holds on local filesystems and on NFS with working
// locks (Linux maps flock onto NFS byte-range locks); a filesystem without lock support gets a warning and no lock.
// The kernel drops the lock when the holder dies, however it dies; the file itself stays (removing it would race).
//
// Resume rules (checkpoint.resume):
//   auto   the newest checkpoint that verifies; none at all: a fresh start; published checkpoints (with a manifest)
//          none of which verifies: refused (ErrorKind::Checkpoint) rather than trained over from step 0.
//   never  a fresh start, refused (ErrorKind::Config) when checkpoint.dir already holds checkpoints.
//   PATH   that checkpoint.
// A resumed run compares its resolved config with the checkpoint's (config_changes): keys that only say how long to
// train, where and how often to log / evaluate / checkpoint, on which device and how many ranks, or how to compute
// the same step (resume_may_change) change freely; any other change is refused listing "key: old -> new" unless
// the command line accepts it (--accept-config-change, recorded in metrics.jsonl).
//
// Records: config.yaml is the resolved config of the run's fresh start and is never overwritten by a resume; a
// resume whose resolved config differs from the last one kept adds config.resume-<k>.yaml; starts.jsonl gets one
// JSON line per start, naming the config file that holds its resolved config (time,
// mamba-train version and git commit, command line, host, pid, device / GPU, world size, step, checkpoint resumed
// from, config file).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/config/config.h"

namespace mt::train {

class RunDirLock {
 public:
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  const std::string& path() const { return path_; }

 private:
  friend std::unique_ptr<RunDirLock> lock_run_directory(const std::string& dir, const std::string& key);
  RunDirLock() = default;
  std::string path_;
  int fd_ = -1;
};

// Creates `dir` when missing and takes the lock on dir/run.lock. `key` names the config key for messages
// ("run.out_dir"). Returns nullptr (after a warning on stderr) when the filesystem has no lock support.
// mt::Error(RunLocked) when another process holds it; mt::Error(Io) when the directory cannot be created or the lock
// file cannot be opened.
std::unique_ptr<RunDirLock> lock_run_directory(const std::string& dir, const std::string& key);

// Creates `dir` when missing and proves it writable by creating and removing a file in it; mt::Error(Io) naming
// `key`, the directory and the reason otherwise.
void check_writable_directory(const std::string& dir, const std::string& key);

// Rank 0, before anything is built: locks the run directory (and an outside checkpoint.dir), checks the output
// directories writable, and refuses checkpoint.resume: never over existing checkpoints.
std::vector<std::unique_ptr<RunDirLock>> prepare_run_directory(const TrainConfig& c);

// The checkpoint to resume from per checkpoint.resume ("" for a fresh start). Skipped invalid checkpoints are
// appended to `warnings`.
std::string checkpoint_to_resume(const TrainConfig& c, std::vector<std::string>* warnings);

// One key whose value differs between a checkpoint's config and the new one (values as YAML text; "(absent)" for a
// key the checkpoint's writer did not know and whose default differs).
struct ConfigChange {
  std::string key, before, after;
  bool allowed = false;  // resume_may_change(key)
};

// True for keys a resume may change without a word (see the header comment).
bool resume_may_change(const std::string& key);

// Differences between the resolved config stored in a checkpoint (config_yaml) and `now`, in schema order. Keys
// missing from the old text (checkpoints written before a key existed) take the value that gives the behaviour of
// before the key (see keep_pre_key_behaviour), else their defaults; keys the schema no longer has are ignored.
std::vector<ConfigChange> config_changes(const std::string& old_yaml, const TrainConfig& now);

// Some keys' defaults differ from the behaviour before the key existed (data.reset_at_document_end: false before).
// A run resumed from (or a model loaded from) a checkpoint whose config lacks such a key keeps the behaviour it was
// trained with: the key is set to that value in c. Returns one line per key so set, for the console.
std::vector<std::string> keep_pre_key_behaviour(TrainConfig& c, const std::string& checkpoint_yaml);

// "optimizer.lr: 0.001 -> 0.0003; data.seq_len: 256 -> 512".
std::string describe_changes(const std::vector<ConfigChange>& changes);

// Keeps the resolved config: config.yaml on a fresh start; on a resume config.resume-<k>.yaml with the first free k,
// unless the last one kept (config.yaml or the highest k) holds the same text. Returns the file's name.
std::string write_run_config(const TrainConfig& c, bool resumed);

// Appends one JSON line to <out_dir>/starts.jsonl.
void append_start_record(const TrainConfig& c, const nlohmann::json& record);

// The command line of this process as one string (arguments with spaces or quotes single-quoted).
std::string command_line();

}  // namespace mt::train
