// mamba-train evaluate RUN_DIR|CHECKPOINT|--hf DIR --data FILE: scores a model on a data file, read-only. Language
// models: loss, perplexity, bits per token and per byte; classifiers: accuracy, F1, per-class precision / recall,
// MCC, confusion matrix and, for two classes, ROC and PR AUC (train/metrics.h).
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "data/labelled.h"
#include "train/cli/commands.h"
#include "train/cli/model_options.h"
#include "train/inference.h"
#include "train/metrics.h"
#include "train/outputs.h"

namespace mt::train {

Runner add_evaluate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("evaluate", "Score a model on a data file (read-only): metrics as a table and JSON");
  struct Opts {
    ModelOptions model;
    std::string data, out;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_options(cmd, o->model);
  cmd->add_option("--data", o->data,
                  "the file to score, in the model's data format (FASTA classifiers: --set data.class_files instead)");
  cmd->add_option("--out", o->out, "also write the metrics to this JSON file");
  cmd->add_flag("--force", o->force, "replace an existing --out file");
  return [o]() {
    if (!o->out.empty()) check_output_path(o->out, o->force, "--out");
    InferenceModel m = load_model(o->model, o->data.empty() ? "" : "data.path=" + o->data);
    const int64_t batch = o->model.batch_size > 0 ? o->model.batch_size : m.cfg.trainer.micro_batch_size;
    const DType cd = compute_dtype(o->model);
    std::vector<std::string> files = {o->data};
    if (m.classifier() && m.input_format() == "fasta") {
      MT_CHECK(o->data.empty(), ErrorKind::Usage,
               "evaluate: a FASTA classifier reads one file per class: --set data.class_files=A.fa,B.fa (in class "
               "order) instead of --data");
      MT_CHECK(option_sets(o->model, "data.class_files"), ErrorKind::Usage,
               "evaluate: name the FASTA files to score, one per class in class order: --set "
               "data.class_files=A.fa,B.fa");
      files = class_file_list(m.cfg.data);
    } else {
      MT_CHECK(!o->data.empty(), ErrorKind::Usage, "evaluate: --data FILE is required");
    }
    nlohmann::ordered_json j;
    if (!m.classifier()) {
      const LanguageModelReport r = evaluate_language_model(m, o->data, batch, cd);
      std::printf("model: %s\ndata: %s (%s tokens, windows of %lld)\n%s", m.source.c_str(), o->data.c_str(),
                  m.cfg.tokenizer.kind.c_str(), (long long)m.cfg.data.seq_len, to_table(r).c_str());
      j = to_json(r);
    } else {
      ClassificationEvaluator ev(m.class_labels());
      InputStats st;
      ForwardRequest req;
      req.compute = cd;
      req.probs = true;
      for_each_input_batch(
          m, files, /*labels=*/true, batch,
          [&](std::vector<InputRow>& rows) {
            const BatchOutputs out = run_batch(m, rows, req);
            const size_t C = static_cast<size_t>(ev.num_classes());
            for (size_t i = 0; i < rows.size(); ++i) ev.add(out.probs.data() + i * C, rows[i].label);
          },
          &st);
      MT_CHECK(ev.size() > 0, ErrorKind::Data, join(files), ": no usable rows to score");
      const ClassificationReport r = ev.report();
      std::printf("model: %s\ndata: %s (%s, %s tokens, seq_len %lld): %s\n%s", m.source.c_str(), join(files).c_str(),
                  m.input_format().c_str(), m.cfg.tokenizer.kind.c_str(), (long long)m.cfg.data.seq_len,
                  describe(st).c_str(), to_table(r).c_str());
      j = to_json(r);
    }
    if (!o->out.empty()) {
      AtomicTextFile f(o->out);
      f.write(j.dump(2) + "\n");
      f.finish();
      std::printf("wrote %s\n", o->out.c_str());
    }
    return 0;
  };
}

}  // namespace mt::train
