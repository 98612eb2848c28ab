// mamba-train evaluate RUN_DIR|CHECKPOINT|--hf DIR --data FILE: scores a model on a data file, read-only. Language
// models: loss, perplexity, bits per token and per byte; classifiers: accuracy, F1, per-class precision / recall,
// MCC, confusion matrix and, for two classes, ROC and PR AUC (train/metrics.h). A classifier's run can instead be
// scored on its own held-out rows, `--split val|test`: the splits training made (data.val_fraction,
// data.test_fraction), rebuilt from the run's config and checked against the data fingerprint its checkpoint holds.
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "data/labelled.h"
#include "train/cli/commands.h"
#include "train/cli/model_options.h"
#include "train/inference.h"
#include "train/metrics.h"
#include "train/outputs.h"
#include "train/task_data.h"

namespace mt::train {

Runner add_evaluate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("evaluate", "Score a model on a data file (read-only): metrics as a table and JSON");
  struct Opts {
    ModelOptions model;
    std::string data, out, split;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_options(cmd, o->model);
  cmd->add_option("--data", o->data,
                  "the file to score, in the model's data format (FASTA classifiers: --set data.class_files instead)");
  cmd->add_option("--split", o->split,
                  "a classifier run's own held-out rows instead of --data: val (the validation split) or test "
                  "(data.test_fraction), as training split them")
      ->check(CLI::IsMember({"val", "test"}));
  cmd->add_option("--out", o->out, "also write the metrics to this JSON file");
  cmd->add_flag("--force", o->force, "replace an existing --out file");
  return [o]() {
    if (!o->out.empty()) check_output_path(o->out, o->force, "--out");
    MT_CHECK(o->split.empty() || o->data.empty(), ErrorKind::Usage, "evaluate: give --data FILE or --split, not both");
    MT_CHECK(o->split.empty() || o->model.set.empty(), ErrorKind::Usage,
             "evaluate --split scores the rows training held out, with the run's own data settings: drop --set");
    InferenceModel m = load_model(o->model, o->data.empty() ? "" : "data.path=" + o->data);
    const int64_t batch = o->model.batch_size > 0 ? o->model.batch_size : m.cfg.trainer.micro_batch_size;
    const DType cd = compute_dtype(o->model);
    std::vector<std::string> files = {o->data};
    std::unique_ptr<data::LabelledDataset> held_out;  // --split: the run's data, split as training split it
    if (!o->split.empty()) {
      MT_CHECK(m.classifier(), ErrorKind::Usage, "evaluate --split: ", m.source,
               " is a language model; --split scores a classifier's held-out rows");
      MT_CHECK(m.hf_dir.empty(), ErrorKind::Usage,
               "evaluate --split needs the run directory or a checkpoint (its config names the data and the split), "
               "not --hf");
      MT_CHECK(m.cfg.data.val_path.empty() || o->split == "test", ErrorKind::Usage, "evaluate --split val: ", m.source,
               " validated on data.val_path '", m.cfg.data.val_path, "': score it with --data");
      held_out = std::make_unique<data::LabelledDataset>(labelled_options(m.cfg));
      MT_CHECK(held_out->fingerprint() == m.data_fingerprint, ErrorKind::Data, "evaluate --split ", o->split,
               ": the data read now (", held_out->fingerprint(), ") is not what ", m.source, " trained on (",
               m.data_fingerprint, "), so its held-out rows cannot be told apart");
      MT_CHECK(o->split == "val" || held_out->num_test() > 0, ErrorKind::Usage, "evaluate --split test: ", m.source,
               " holds out no test rows (train with data.test_fraction > 0)");
    } else if (m.classifier() && m.input_format() == "fasta") {
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
      auto score = [&](std::vector<InputRow>& rows) {
        const BatchOutputs out = run_batch(m, rows, req);
        const size_t C = static_cast<size_t>(ev.num_classes());
        for (size_t i = 0; i < rows.size(); ++i) ev.add(out.probs.data() + i * C, rows[i].label);
      };
      std::string what;
      if (held_out) {
        const std::vector<data::Example>& ex = held_out->split(o->split);
        std::vector<InputRow> rows;
        for (size_t i = 0; i < ex.size(); ++i) {
          rows.push_back(InputRow{static_cast<int64_t>(i), ex[i].ids, ex[i].label});
          if (static_cast<int64_t>(rows.size()) == batch || i + 1 == ex.size()) {
            score(rows);
            rows.clear();
          }
        }
        const auto& d = m.cfg.data;
        what = str(
            "the ", o->split == "val" ? "validation" : "test", " split (", ex.size(), " rows; ",
            o->split == "val" ? str("data.val_fraction ", d.val_fraction) : str("data.test_fraction ", d.test_fraction),
            ", split seed ", d.split_seed >= 0 ? d.split_seed : static_cast<int64_t>(m.cfg.run.seed), ")");
      } else {
        for_each_input_batch(m, files, /*labels=*/true, batch, score, &st);
        what = str(join(files), " (", m.input_format(), ", ", m.cfg.tokenizer.kind, " tokens, seq_len ",
                   m.cfg.data.seq_len, "): ", describe(st));
      }
      MT_CHECK(ev.size() > 0, ErrorKind::Data, held_out ? "the held-out split" : join(files),
               ": no usable rows to score");
      const ClassificationReport r = ev.report();
      std::printf("model: %s\ndata: %s\n%s", m.source.c_str(), what.c_str(), to_table(r).c_str());
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
