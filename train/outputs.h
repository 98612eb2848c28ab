// Output files of `mamba-train predict` and `evaluate`: written under a temporary name next to the target and renamed
// over it when complete, so that an interrupted run leaves no partial file and an existing file is replaced only by
// a finished one (and only when asked: --force).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mt::train {

// Refuses (mt::Error(Usage)) an output path that exists unless `force`, or whose directory does not exist; `option`
// names the flag in the message ("--out").
void check_output_path(const std::string& path, bool force, const std::string& option);

// A text file written through a temporary file: write(), then finish() (flush, fsync, rename, directory fsync).
// Destroyed unfinished, the temporary file is removed. Errors: mt::Error(Io) naming the path.
class AtomicTextFile {
 public:
  explicit AtomicTextFile(const std::string& path);
  ~AtomicTextFile();
  AtomicTextFile(const AtomicTextFile&) = delete;
  AtomicTextFile& operator=(const AtomicTextFile&) = delete;
  void write(const std::string& text);
  void finish();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool finished_ = false;
};

// Class predictions, one row per call in input order, as
//   .jsonl: {"row": i, "predicted": LABEL, "probs": {LABEL: p, ...}}  (labels as strings, classes in class order)
//   .csv:   row,predicted,prob_LABEL,...                               (RFC 4180 quoting where needed)
// Probabilities are written in the shortest form that reads back to the same double.
// mt::Error(Usage) unless the path ends in .jsonl or .csv; returns it.
const std::string& prediction_path(const std::string& path);

class PredictionWriter {
 public:
  // mt::Error(Usage) when the path ends neither in .jsonl nor in .csv.
  PredictionWriter(const std::string& path, std::vector<std::string> labels);
  void write(int64_t row, const double* probs);
  void finish() { file_.finish(); }

 private:
  AtomicTextFile file_;
  std::vector<std::string> labels_;
  bool csv_ = false;
};

// The shortest decimal text that reads back to exactly v ("0.25", "1e-07"); "nan" / "inf" for non-finite values.
std::string shortest_double(double v);

}  // namespace mt::train
