// Training output: a JSON-lines metrics file (machine-readable, survives crashes and resumes) and the console
// progress display (a one-line bar on a terminal, plain lines in CI logs).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::train {

// <out_dir>/metrics.jsonl: one JSON object per line, flushed after every write so that a crash loses at most the
// line being written.
//
// Non-finite numbers (anywhere in the record, nested objects and arrays included) are written as null, and the
// record gets a "nonfinite" field listing their key paths ("loss", "eval.loss", "values.2"), so a NaN is both
// valid JSON and visible.
//
// append = true is for resumes: the existing file is kept, except a partial last line (a crash in mid-write) which
// is cut off first, so every line in the file parses. append = false starts a new file. Missing parent
// directories are created. Errors (open, write, flush: permissions, disk full) are mt::Error(Io) naming the path.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& record);  // record must be a JSON object
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// Replaces non-finite numbers in `record` by null; returns their key paths (what MetricsLog::write does).
std::vector<std::string> null_nonfinite(nlohmann::json& record);

// Console progress of a training run, on stdout.
//   terminal (isatty(stdout) and enabled): one line rewritten in place with '\r':
//     [#########...............]  120/1000  12%  loss 2.3456  lr 3.00e-04  gnorm 0.812  12.3k tok/s  eta 0:01:23
//   otherwise (CI logs, pipes, enabled = false): one plain line per update, key-value pairs:
//     step 120/1000  loss 2.3456  lr 3.00e-04  gnorm 0.812  tok/s 12.3k  eta 0:01:23
//   both add "epoch 1.37" when set_epoch gave one, "scale 65536" when the loss scale is not 1 (fp16) and "skipped 3"
//   when steps were skipped.
// The ETA comes from the wall time per step measured from the first update on (the first logged interval holds
// the warm-up step: CUDA context, allocator, kernel first launches); at the first update, with nothing better,
// it uses the time since construction.
class Progress {
 public:
  // start_step: the step the run (re)starts from (a resumed run starts past 0).
  Progress(int64_t total_steps, bool enabled, int64_t start_step = 0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(int64_t step, double loss, double lr, double grad_norm, double loss_scale, double tokens_per_s,
              int64_t skipped);
  void message(const std::string& line);  // printed above the bar (eval results, checkpoint saved, warnings)
  // The epoch (samples seen / samples per epoch) shown by the next updates as "epoch 1.37"; < 0 hides it.
  void set_epoch(double epoch) { epoch_ = epoch; }
  void finish();  // ends the bar line; idempotent
  bool tty() const { return tty_; }

 private:
  void emit(const std::string& s);

  int64_t total_, start_step_;
  bool tty_ = false;
  bool bar_shown_ = false;
  std::string last_bar_;
  std::chrono::steady_clock::time_point t0_, t_ref_;
  int64_t step_ref_ = -1;  // step of the first update (the ETA reference point); -1 before it
  double epoch_ = -1;
};

// Formatting used by Progress (exposed for tests and other console output).
std::string format_duration(double seconds);  // h:mm:ss ("0:01:23", "27:46:40"); "-:--:--" if unknown/negative
std::string format_rate(double per_second);   // compact with k/M/G suffix: "950", "12.3k", "4.56M"
std::string format_lr(double lr);             // "3.00e-04"

}  // namespace mt::train
