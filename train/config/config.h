// The training configuration: what `mamba-train train CONFIG.yaml [--set a.b=c ...]` reads. Every key is
// documented in configs/README.md; train/config/schema.cpp is the single place that lists keys, types, ranges and
// defaults. Unknown keys, wrong types, out-of-range values, duplicate keys, several documents, anchors/aliases and
// merge keys are errors naming the key path and line:column (docs/DESIGN.md F6).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/config.h"

namespace mt::train {

struct RunSection {
  std::string name = "run";
  std::string out_dir;  // default: runs/<name>
  uint64_t seed = 0;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  bool deterministic = false;   // no atomics in reductions where a deterministic path exists
};

struct ModelSection {
  std::string variant;      // "" | 130m | 370m | 790m | 1.4b | 2.8b: starting point, fields below override
  MambaConfig mamba;        // d_model, n_layer, d_state, d_conv, expand, dt_rank, vocab_size (0 = tokenizer's), ...
  std::string head = "lm";  // lm | sequence_classification | token_classification
  int64_t num_classes = 2;
  std::string pooling = "mean";     // mean | max | last | state (sequence_classification)
  std::string init_from;            // "" | an HF directory | a run directory | a checkpoint file (train/init_from.h)
  double dropout = 0.0;             // training only: on each block's mixer output (nn/mamba.h ForwardOptions)
  double classifier_dropout = 0.0;  // training only: on a classification head's input
};

struct TokenizerSection {
  std::string kind = "byte";                                         // byte | dna (data/dna.h) | bpe (data/bpe.h)
  std::string path = "data/tokenizers/gpt-neox-20b/tokenizer.json";  // bpe: the HuggingFace tokenizer.json
};

struct DataSection {
  std::string kind = "text";  // text (byte-level LM on a file) | selective_copying (synthetic, Mamba paper §4.1) |
                              // classification (labelled sequences, sequence_classification head)
  std::string path;           // text: the corpus
  double val_fraction = 0.1;  // text: held-out tail fraction
  int64_t seq_len = 256;
  // selective_copying: sequences of seq_len tokens holding `copy_tokens` data tokens at random positions among
  // noise, then `copy_tokens` markers; the model must output the data tokens in order at the marker positions.
  int64_t copy_tokens = 4;
  int64_t copy_vocab = 8;  // data token values 1..copy_vocab (0 = noise, copy_vocab+1 = marker)
  int64_t val_samples = 256;
  // classification (data/labelled.h): rows of data.path (tsv | csv | jsonl) or one FASTA file per class.
  std::string format = "tsv";
  std::string val_path;     // optional validation file; else val_fraction of the rows, split by run.seed
  std::string class_files;  // fasta: comma-separated, file k = class k
  std::string text_column = "sentence", label_column = "label";
  std::vector<std::string> label_names;  // class names in class order; empty: integer labels or the data's names
  std::string bad_rows = "error";        // error | skip
  bool rc_augment = false;               // dna: reverse-complement half of the training samples
  int64_t split_seed = -1;               // classification held-out split (without val_path); -1 = run.seed
  double test_fraction = 0.0;            // classification without val_path: rows held out for evaluate --split test
  bool reset_at_document_end = true;     // LM: zero every layer's state where a document starts inside a window
};

struct OptimizerSection {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // global L2 norm; 0 = off
  double head_lr = 0;      // peak LR of the parameters outside the backbone; 0 = lr
};

struct SchedulerSection {
  std::string kind = "cosine";  // cosine | constant | linear
  int64_t warmup_steps = 0;
  double warmup_ratio = 0;  // warmup as a fraction of the run's steps (instead of warmup_steps)
  double min_lr = 1e-5;
};

struct TrainerSection {
  int64_t max_steps = 100;  // 0 when trainer.epochs gives the length
  double epochs = 0;        // passes over the training data (instead of max_steps); 0 = max_steps
  int64_t micro_batch_size = 8;
  int64_t global_batch_size = 8;   // a multiple of micro_batch_size * world size: gradient accumulation
  std::string precision = "fp32";  // fp32 | bf16 | fp16 (fp16: dynamic loss scaling)
  int64_t eval_every = 50;         // 0 = only at the end
  int64_t eval_batches = 0;        // 0 = the whole validation set
  int64_t log_every = 10;
  int64_t max_nonfinite_steps = 10;  // stop after this many consecutive skipped (inf/NaN) steps
  double loss_scale_init = 65536.0;  // fp16 only
  int64_t loss_scale_growth_interval = 2000;
  int64_t chunk_len = 0;  // > 0: LM sequences trained chunk by chunk with the states carried (nn/chunked.h)
  std::string activation_checkpointing = "none";  // none | block (recompute each block in the backward)
  std::string objective = "clm";                  // clm (next token) | mlm (masked tokens, data/mlm.h)
  double mlm_probability = 0.15;
  int64_t early_stop_patience = 0;    // stop after this many evaluations without a new best; 0 = off
  int64_t freeze_backbone_steps = 0;  // the backbone is not updated during the first N optimizer steps
};

struct CheckpointSection {
  std::string dir;       // default: <out_dir>/checkpoints
  int64_t every = 1000;  // steps; 0 = only at the end (and on SIGINT / SIGTERM / SIGHUP)
  int64_t keep_last = 3;
  std::string resume = "auto";        // auto (newest valid in dir, else start fresh) | never | a checkpoint path
  std::string monitor;                // "" | eval.<key>: keep the best checkpoints by it (train/best.h)
  std::string monitor_mode = "auto";  // auto | min | max
  int64_t keep_best = 1;              // best checkpoints kept besides the keep_last newest
};

struct LoggingSection {
  std::string metrics_file;  // default: <out_dir>/metrics.jsonl
  bool progress = true;      // progress bar on a terminal; plain lines otherwise
  bool plot = true;          // <out_dir>/loss.svg at the end
};

struct DistributedSection {
  int64_t nproc_per_node = 1;    // processes `mamba-train train` starts on this host (one per GPU); --nproc overrides
  std::string backend = "auto";  // gradient all-reduce: auto (nccl on CUDA, else tcp) | nccl | tcp
  double timeout_s = 300;        // every collective / barrier / rendezvous: a silent rank past this ends the job
  double bucket_mb = 25;         // gradient bucket size (MiB of fp32 gradients per all-reduce)
};

struct TrainConfig {
  RunSection run;
  ModelSection model;
  TokenizerSection tokenizer;
  DataSection data;
  OptimizerSection optimizer;
  SchedulerSection scheduler;
  TrainerSection trainer;
  CheckpointSection checkpoint;
  LoggingSection logging;
  DistributedSection distributed;
};

// Parse YAML text (source names the file for messages), apply `--set a.b=value` overrides (value parsed as YAML
// scalar of the key's type), validate, fill defaults that depend on other keys (out_dir, checkpoint.dir, ...).
// Throws mt::Error(ErrorKind::Config) with "<source>:<line>:<col>: <key.path>: <problem>" (+ did-you-mean).
// check_files = false skips the checks that data files and class files are given and exist, and does not read
// model.init_from again (a run's stored config read back by `evaluate` / `predict`: it holds the source's dimensions,
// and they read other files).
TrainConfig load_train_config(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides = {}, bool check_files = true);
TrainConfig load_train_config_file(const std::string& path, const std::vector<std::string>& overrides = {});
// `--set section.key=value` overrides applied to an existing config with the schema's parsing and per-key checks
// (types, ranges, choices; "model.variant" re-derives the model as load_train_config does), without the cross-key
// rules and file checks of a training config: for commands that describe a config without training it (info).
// mt::Error(Config) "--set <key.path>: <problem>".
void apply_overrides(TrainConfig& c, const std::vector<std::string>& overrides);

// data.class_files split at commas ("a.fa,b.fa" -> {"a.fa", "b.fa"}; empty entries kept so they can be reported).
std::vector<std::string> class_file_list(const DataSection& d);

// The resolved config as YAML, every key present (written into the run directory and into checkpoints).
std::string dump_train_config(const TrainConfig& c);

// Every key's value as canonical YAML text (what dump_train_config writes), by key path.
std::map<std::string, std::string> config_values(const TrainConfig& c);
// The same from a resolved config's YAML text (a checkpoint's config_yaml): values are read with the key's type and
// re-formatted, so equal values give equal text; keys the text lacks are absent from the result; keys the schema no
// longer knows are skipped; a value that no longer reads (a narrowed range) keeps its text. Throws mt::Error(Config)
// only when the text is not YAML.
std::map<std::string, std::string> config_values_from_yaml(const std::string& yaml_text, const std::string& source);
// The default value of a key as canonical YAML text ("" for keys whose default is derived from others).
std::string config_default_text(const std::string& path);

}  // namespace mt::train
