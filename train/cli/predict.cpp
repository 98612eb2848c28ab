// mamba-train predict RUN_DIR|CHECKPOINT|--hf DIR --input FILE --out FILE.jsonl|FILE.csv [--embeddings OUT.h5]:
// class predictions for new inputs, and / or the encoder's features, streamed in batches (constant memory).
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "train/ckpt/hdf5_io.h"
#include "train/cli/commands.h"
#include "train/cli/model_options.h"
#include "train/inference.h"
#include "train/outputs.h"

namespace mt::train {

Runner add_predict_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("predict", "Predict classes of new inputs and / or write the encoder's features");
  struct Opts {
    ModelOptions model;
    std::string input, out, embeddings, pooling;
    bool per_token = false, force = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_options(cmd, o->model);
  cmd->add_option("--input", o->input,
                  "rows in the model's data format (tsv / csv / jsonl / fasta; a language model: one text per line, "
                  "or FASTA records with the dna tokenizer); labels are not read")
      ->required();
  cmd->add_option("--out", o->out, "class predictions: FILE.jsonl or FILE.csv, one row per input row, in input order");
  cmd->add_option("--embeddings", o->embeddings,
                  "HDF5 file of features: `pooled` [rows, F] and `row` [rows] (the input row of each)");
  cmd->add_flag("--per-token", o->per_token,
                "--embeddings holds `hidden` [tokens, d_model] (last_hidden_state of every token of every row, rows "
                "concatenated; 2 d_model for a reverse-complement-equivariant model) and `offsets` [rows + 1] (where "
                "each row starts) instead of `pooled`");
  cmd->add_option("--pooling", o->pooling,
                  "pooled features: mean | max | last | state (default: the classifier's pooling; mean for a language "
                  "model)")
      ->check(CLI::IsMember({"mean", "max", "last", "state"}));
  cmd->add_flag("--force", o->force, "replace existing output files");
  return [o]() {
    MT_CHECK(!o->out.empty() || !o->embeddings.empty(), ErrorKind::Usage,
             "predict: name an output: --out FILE.jsonl|FILE.csv and / or --embeddings FILE.h5");
    MT_CHECK(!o->per_token || !o->embeddings.empty(), ErrorKind::Usage, "predict: --per-token needs --embeddings");
    MT_CHECK(o->pooling.empty() || !o->embeddings.empty(), ErrorKind::Usage, "predict: --pooling needs --embeddings");
    MT_CHECK(o->pooling.empty() || !o->per_token, ErrorKind::Usage,
             "predict: --pooling and --per-token exclude each other (per-token features are not pooled)");
    if (!o->out.empty()) {
      prediction_path(o->out);
      check_output_path(o->out, o->force, "--out");
    }
    if (!o->embeddings.empty()) check_output_path(o->embeddings, o->force, "--embeddings");
    MT_CHECK(o->out.empty() || o->out != o->embeddings, ErrorKind::Usage,
             "predict: --out and --embeddings are the same file");
    InferenceModel m = load_model(o->model, "data.path=" + o->input);
    MT_CHECK(o->out.empty() || m.classifier(), ErrorKind::Checkpoint, m.source,
             " is a language model (model.head lm): it has no classes to predict; --embeddings writes its features, "
             "`mamba-train evaluate` scores it");
    const int64_t batch = o->model.batch_size > 0 ? o->model.batch_size : m.cfg.trainer.micro_batch_size;
    ForwardRequest req;
    req.compute = compute_dtype(o->model);
    req.probs = !o->out.empty();
    req.pooled = !o->embeddings.empty() && !o->per_token;
    req.hidden = o->per_token;
    req.pooling = o->pooling;
    const std::string pooling = !o->pooling.empty() ? o->pooling : m.classifier() ? m.cls->pooling() : "mean";
    const MambaConfig& mc = m.mamba();
    MT_CHECK(!req.pooled || pooling != "state" || (!mc.bidirectional && !mc.rc_equivariant), ErrorKind::Usage,
             "predict: --pooling state needs a unidirectional model (a bidirectional or reverse-complement-equivariant "
             "one has two final states)");
    // last_hidden_state: d_model channels, both strands' (2 d_model) for a reverse-complement-equivariant model.
    const int64_t hidden_width = mc.rc_equivariant ? 2 * mc.d_model : mc.d_model;

    std::unique_ptr<PredictionWriter> preds;
    if (!o->out.empty()) preds = std::make_unique<PredictionWriter>(o->out, m.class_labels());
    std::unique_ptr<H5RowWriter> emb;
    int64_t offset = 0;
    if (!o->embeddings.empty()) {
      emb = std::make_unique<H5RowWriter>(o->embeddings);
      emb->add_dataset("row", 0);
      if (o->per_token) {
        emb->add_dataset("hidden", hidden_width);
        emb->add_dataset("offsets", 0);
        emb->append("offsets", &offset, 1);
      } else {
        emb->add_dataset("pooled", pooling == "state" ? mc.d_inner * mc.d_state : mc.d_model);
      }
    }
    InputStats st;
    const size_t C = m.classifier() ? static_cast<size_t>(m.cls->num_classes()) : 0;
    for_each_input_batch(
        m, {o->input}, /*labels=*/false, batch,
        [&](std::vector<InputRow>& rows) {
          const BatchOutputs out = run_batch(m, rows, req);
          for (size_t i = 0; i < rows.size(); ++i) {
            if (preds) preds->write(rows[i].row, out.probs.data() + i * C);
            if (!emb) continue;
            emb->append("row", &rows[i].row, 1);
            if (o->per_token) {
              const int64_t len = static_cast<int64_t>(rows[i].ids.size()), L = out.hidden.size(1);
              emb->append("hidden", out.hidden.data<float>() + static_cast<int64_t>(i) * L * hidden_width, len);
              offset += len;
              emb->append("offsets", &offset, 1);
            } else {
              const int64_t F = out.pooled.size(1);
              emb->append("pooled", out.pooled.data<float>() + static_cast<int64_t>(i) * F, 1);
            }
          }
        },
        &st);
    std::printf("model: %s\ndata: %s (%s, %s tokens, seq_len %lld): %s\n", m.source.c_str(), o->input.c_str(),
                m.input_format().c_str(), m.cfg.tokenizer.kind.c_str(), (long long)m.cfg.data.seq_len,
                describe(st).c_str());
    if (preds) {
      preds->finish();
      std::printf("wrote %s (%lld predictions)\n", o->out.c_str(), (long long)st.rows);
    }
    if (emb) {
      emb->finish();
      std::printf("wrote %s (%s of %lld rows)\n", o->embeddings.c_str(),
                  o->per_token ? "per-token hidden states" : ("pooled features (" + pooling + ")").c_str(),
                  (long long)st.rows);
    }
    return 0;
  };
}

}  // namespace mt::train
