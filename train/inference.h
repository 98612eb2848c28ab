// Using a trained model: where it comes from (a run directory, a checkpoint, or a directory `mamba-train export`
// wrote), the data settings it was trained with, reading new inputs the way training read its data, and running the
// model without gradients. Shared by `evaluate`, `predict` and `export` (train/cli/) and, for the language-model
// metrics, by the trainer's evaluation.
//
// Model sources:
//   RUN_DIR / checkpoint directory   its newest valid checkpoint (train/ckpt/checkpoint.h); with `best`, the
//                                    checkpoint its `best` file names (checkpoint.monitor)
//   CHECKPOINT (ckpt-N.h5)           that checkpoint
//   --hf DIR                         config.json + model.safetensors (+ tokenizer files), as written by export:
//                                    see save_export below; a published HuggingFace Mamba LM directory also loads
//                                    (head lm; tokenizer from its tokenizer.json).
// The data settings (data.*, tokenizer.*) come from the checkpoint's resolved config, or from the export's
// config.json; `--set data.key=value` / `--set tokenizer.key=value` override them. Files named by the stored config
// need not exist any more: evaluate and predict read the files they are given.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "nn/heads.h"
#include "train/config/config.h"
#include "train/metrics.h"

namespace mt::train {

// RUN_DIR | checkpoint directory | checkpoint file -> the checkpoint file to read: a directory's newest valid
// checkpoint (newer invalid ones passed over are appended to *skipped as "<path>: <reason>"), or with `best` the
// checkpoint its `best` file names. mt::Error(Checkpoint) when a directory holds no valid (or best) checkpoint or the
// path does not exist; mt::Error(Usage) for `best` with a file.
std::string resolve_checkpoint(const std::string& path, bool best = false, std::vector<std::string>* skipped = nullptr);

struct InferenceModel {
  std::string source;                    // for messages: "checkpoint runs/x/checkpoints/ckpt-00000100.h5 (step 100)"
  std::string checkpoint;                // the checkpoint file ("" for a directory source)
  std::string hf_dir;                    // the export directory ("" for a checkpoint)
  int64_t step = -1;                     // the checkpoint's step (-1: unknown)
  std::vector<std::string> skipped;      // newer invalid checkpoints passed over ("<path>: <reason>")
  TrainConfig cfg;                       // model.head / num_classes / pooling, tokenizer.*, data.* (overrides applied)
  std::vector<std::string> label_names;  // class names when the run's labels are names; empty: integer labels
  std::string data_fingerprint;          // the training data's fingerprint (checkpoint sources; "" for --hf)
  std::unique_ptr<nn::MambaLMHeadModel> lm;                 // model.head lm
  std::unique_ptr<nn::MambaForSequenceClassification> cls;  // model.head sequence_classification
  Device device = Device::cpu();

  bool classifier() const { return cls != nullptr; }
  const nn::MambaBackbone& backbone() const;
  const nn::Module& module() const;
  const MambaConfig& mamba() const { return backbone().config(); }
  // Class i's label as a string: its name, or the integer i.
  std::vector<std::string> class_labels() const;
  // The input format of evaluate / predict: data.format for a classifier; for a language model "fasta" with the dna
  // tokenizer and "lines" otherwise, unless data.format was given with --set.
  std::string input_format() const;
  bool format_overridden = false;  // data.format came from --set
};

// The model of exactly one of `path` (RUN_DIR | CHECKPOINT) and `hf_dir`, with `sets` ("data.key=value",
// "tokenizer.key=value") applied to its data settings, on `device`. Errors: mt::Error(Usage) for both sources or
// neither; mt::Error(Config) for an override of another section or a bad value; mt::Error(Checkpoint) for a missing
// or invalid checkpoint / directory, or a head other than lm / sequence_classification.
InferenceModel load_inference_model(const std::string& path, const std::string& hf_dir,
                                    const std::vector<std::string>& sets, Device device, bool best = false);

// Writes the model as a directory that `--hf` reads back (and HuggingFace transformers, for language models):
//   model.safetensors   every parameter under the model's names, f32 or bf16 (dtype). Language models keep the
//                       MambaForCausalLM names (backbone.*, lm_head.weight when untied); classifiers add their head
//                       classifier.weight [num_classes, F] and classifier.bias [num_classes].
//   config.json         the transformers Mamba config (nn/config.h) plus, for classifiers, architectures
//                       ["MambaForSequenceClassification"], num_labels, id2label {"0": name}, label2id {name: 0}; and
//                       "mamba_train": {"format_version": 1, "head", "pooling" and "head_tensors" (their names;
//                       classifiers), "objective" (clm / mlm; language models), "tokenizer": kind, "data": {data.*
//                       settings evaluate / predict need: every data key but the file paths}}.
//   tokenizer.json      the BPE tokenizer's file, copied (tokenizer.kind bpe), or
//   mamba_tokenizer.json  {"kind": "byte"} / {"kind": "dna"}.
// Creates `dir`; files are replaced atomically. mt::Error(Io) on write failures, (Data) when a BPE tokenizer file
// cannot be read.
void save_export(const InferenceModel& m, const std::string& dir, DType dtype);

// ---- inputs ------------------------------------------------------------------------------------------------------

struct InputRow {
  int64_t row = 0;           // index among the input's rows (records), from 0
  std::vector<int32_t> ids;  // tokens, cut to data.seq_len
  int64_t label = -1;        // the class (when labels are read)
};

struct InputStats {
  int64_t rows = 0, skipped = 0, truncated = 0;
  std::vector<std::string> skipped_examples;  // "FILE:LINE: problem", at most 5
};

// Streams the rows of `files` in the model's input format (input_format()), tokenized as in training and cut to
// data.seq_len tokens, and calls on_batch with batches of up to batch_size rows in input order; the memory held is
// one batch. files: one file, or for a FASTA classifier with labels one file per class (file k holds class k).
// labels: read each row's class (tsv / csv / jsonl: the label column, a name of the run's classes or an integer);
// false: labels are not read. A row that cannot be used (the problems of data/labelled.h, a token outside the
// model's vocabulary) stops with mt::Error(Data) "FILE:LINE: problem", or with data.bad_rows: skip is skipped and
// counted (its row index is not reused).
void for_each_input_batch(const InferenceModel& m, const std::vector<std::string>& files, bool labels,
                          int64_t batch_size, const std::function<void(std::vector<InputRow>&)>& on_batch,
                          InputStats* stats);

// ---- running the model -------------------------------------------------------------------------------------------

struct BatchOutputs {
  std::vector<double> probs;  // rows x num_classes class probabilities (classifiers; softmax in double)
  Tensor pooled;              // [rows, F] f32 on the CPU: the pooled features (pooling below)
  Tensor hidden;              // [rows, L, d_model] f32 on the CPU: last_hidden_state (padded to the longest row)
};

struct ForwardRequest {
  DType compute = DType::F32;
  bool probs = false, pooled = false, hidden = false;
  std::string pooling;  // "" = the classifier's pooling (mean for a language model)
};

// One no-grad forward of a batch (rows padded to the longest with a token mask) on the model's device.
BatchOutputs run_batch(const InferenceModel& m, const std::vector<InputRow>& rows, const ForwardRequest& req);

// Bytes of original text each token id stands for, for bits_per_byte: the byte tokenizer 1 per id; dna 1 per base
// (A C G T N) and 0 for [PAD] / [EOD]; bpe the length of the token's bytes, and 0 for <|endoftext|>, which the data
// adds after each document. Empty when the tokens are not text (data.kind selective_copying).
std::vector<int32_t> token_text_bytes(const TrainConfig& c);

// A language model on one file: its tokens (as data.kind text reads them) in non-overlapping windows of
// data.seq_len (the last one shorter, if at least 2 tokens), each scoring its next-token predictions 1 .. len - 1;
// with trainer.chunk_len the windows run chunk by chunk (nn/chunked.h), as the trainer evaluates them.
LanguageModelReport evaluate_language_model(const InferenceModel& m, const std::string& file, int64_t batch_size,
                                            DType compute);

}  // namespace mt::train
