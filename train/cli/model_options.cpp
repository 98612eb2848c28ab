#include "train/cli/model_options.h"

#include <cstdio>

#include "core/device.h"
#include "core/error.h"
#include "train/trainer.h"

namespace mt::train {

void add_model_options(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("model", o.model,
                  "run directory or checkpoint directory (its newest valid checkpoint), or a checkpoint file");
  cmd->add_flag("--best", o.best,
                "the run's best checkpoint by checkpoint.monitor (the `best` file of its checkpoint directory) "
                "instead of the newest");
  cmd->add_option("--hf", o.hf, "instead: a directory written by `mamba-train export` (or a HuggingFace Mamba LM)");
  cmd->add_option("--set", o.set,
                  "override a data setting of the model's run: --set data.text_column=review (repeatable; data.* and "
                  "tokenizer.* keys)");
  cmd->add_option("--device", o.device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  cmd->add_option("--precision", o.precision, "compute precision: fp32 | bf16 | fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "rows per forward pass (default: the run's trainer.micro_batch_size)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
}

InferenceModel load_model(const ModelOptions& o, const std::string& input) {
  std::vector<std::string> sets = o.set;
  if (!input.empty()) sets.insert(sets.begin(), input);  // a later --set of the same key wins
  InferenceModel m = load_inference_model(o.model, o.hf, sets, resolve_device(o.device), o.best);
  warn_skipped(m);
  return m;
}

void warn_skipped(const InferenceModel& m, const char* verb) {
  // Say so when a newer checkpoint was passed over: the model is then not the last one saved.
  for (const std::string& s : m.skipped) std::printf("warning: skipping invalid checkpoint %s\n", s.c_str());
  if (!m.skipped.empty()) std::printf("%s %s, the newest valid checkpoint\n", verb, m.checkpoint.c_str());
}

DType compute_dtype(const ModelOptions& o) { return precision_dtype(o.precision); }

bool option_sets(const ModelOptions& o, const std::string& key) {
  for (const std::string& s : o.set)
    if (s.compare(0, key.size() + 1, key + "=") == 0) return true;
  return false;
}

std::string join(const std::vector<std::string>& files) {
  std::string s;
  for (const std::string& f : files) s += (s.empty() ? "" : ", ") + f;
  return s;
}

std::string describe(const InputStats& st) {
  std::string s = str(st.rows, " rows (", st.skipped, " bad rows skipped, ", st.truncated, " truncated)");
  for (const std::string& e : st.skipped_examples) s += "\n  skipped: " + e;
  return s;
}

}  // namespace mt::train
