// The options evaluate and predict share: which model (RUN_DIR | CHECKPOINT | --hf DIR), data-setting overrides,
// device, precision and batch size; and small helpers for their reports.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "train/inference.h"

namespace mt::train {

struct ModelOptions {
  std::string model, hf;
  std::vector<std::string> set;
  std::string device = "auto", precision = "fp32";
  int64_t batch_size = 0;  // 0: the run's trainer.micro_batch_size
  bool best = false;       // the run's best checkpoint (checkpoint.monitor) instead of its newest
};

void add_model_options(CLI::App* cmd, ModelOptions& o);
// load_inference_model with o's --set list, plus `input` ("data.path=FILE": the file given on the command line) when
// not empty. Prints a warning for each newer invalid checkpoint passed over.
InferenceModel load_model(const ModelOptions& o, const std::string& input);
// The newer invalid checkpoints passed over, as warnings on stdout, then "<verb> CHECKPOINT, the newest valid one".
void warn_skipped(const InferenceModel& m, const char* verb = "using");
DType compute_dtype(const ModelOptions& o);
bool option_sets(const ModelOptions& o, const std::string& key);  // a --set names this key
std::string join(const std::vector<std::string>& files);          // "a.fa, b.fa"
std::string describe(const InputStats& st);                       // "872 rows (0 bad rows skipped, 3 truncated)"

}  // namespace mt::train
