// The best checkpoints of a run by one evaluation metric (checkpoint.monitor), and early stopping
// (trainer.early_stop_patience).
//
// checkpoint.monitor names a number of the evaluation record that metrics.jsonl gets after each evaluation:
// "eval.<key>" is <key> of its "eval" object (eval.loss, eval.accuracy, eval.mcc, ...: whatever the task reports).
// checkpoint.monitor_mode: min, max, or auto = min for loss, perplexity and bits_per_* keys, max for the others.
// After each evaluation the value is ranked among the best checkpoint.keep_best seen so far; entering that list makes
// the trainer save a checkpoint at that step (whatever checkpoint.every says), and retention never deletes a listed
// one. The checkpoint directory's `best` file names the best one ("ckpt-<step>.h5\n", like `latest`). An evaluation
// that does not beat the best (NaN never does) counts towards early stopping: after early_stop_patience of them in a
// row the run saves a checkpoint and stops. The whole state is stored in every checkpoint (a JSON string), so a
// resumed run ranks and counts on; a resume with another monitor starts afresh.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::train {

class BestTracker {
 public:
  BestTracker() = default;
  // monitor "" = off (update does nothing).
  BestTracker(const std::string& monitor, const std::string& mode, int64_t keep);

  bool enabled() const { return !monitor_.empty(); }
  const std::string& monitor() const { return monitor_; }
  bool minimize() const { return minimize_; }

  // The monitored number of an evaluation record's "eval" object. mt::Error(Config) naming checkpoint.monitor and the
  // keys the record has when it has no such number.
  double value_of(const nlohmann::json& eval) const;

  // Ranks the evaluation of `step`. Returns true when it entered the best keep_best (a checkpoint is needed at step).
  bool update(int64_t step, double value);
  // True when the last update made its step the best of all.
  bool improved() const { return last_improved_; }
  int64_t evals_since_best() const { return evals_since_best_; }
  bool has_best() const { return !top_.empty(); }
  int64_t best_step() const { return top_.empty() ? -1 : top_.front().first; }
  double best_value() const { return top_.empty() ? 0.0 : top_.front().second; }
  std::vector<int64_t> steps() const;  // the listed steps, best first

  // Checkpoint string "best/state"; restore() keeps the state only when it was for the same monitor (and trims it to
  // this tracker's keep_best), and reports whether it did.
  std::string state() const;
  bool restore(const std::string& state);

 private:
  std::string monitor_;
  bool minimize_ = false;
  int64_t keep_ = 1;
  std::vector<std::pair<int64_t, double>> top_;  // (step, value), best first
  int64_t evals_since_best_ = 0;
  bool last_improved_ = false;
};

// "auto" resolved: true (minimise) for loss, perplexity and bits_per_* keys.
bool monitor_minimizes(const std::string& monitor, const std::string& mode);

}  // namespace mt::train
