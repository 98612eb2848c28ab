// Labelled sequence-classification data: text rows from TSV / CSV / JSONL files, or DNA records from FASTA files
// given one per class, tokenized (bytes, DNA characters, or the byte-level BPE of a tokenizer.json: data/bpe.h), with
// deterministic splits and padded batches.
//
// Readers (data/row_stream.h: the formats, streamed; file and 1-based line in every message). Any file may be
// gzip-compressed (recognised by its first bytes, data/gz_reader.h).
//   tsv / csv / jsonl  one file of rows with a text and a label column / field.
//   fasta              one file per class: file k holds class k.
// Labels of tsv / csv / jsonl rows are either integers 0 .. num_classes - 1 or class names. With label_names (the
// config's data.label_names) every label must be one of those names, class k = label_names[k]. Without it the first
// row's label decides: an integer makes every label an integer class index; anything else makes every label a name,
// and the classes are the sorted (byte order) unique names of the file, which must be num_classes many. A name that
// is an integer, an integer among names, or a label that is not valid UTF-8 text is a bad row. A validation file
// (val_path) takes the training file's classes: its labels must be integers, or names among the training names.
// Bad rows (wrong column count, empty text, a bad label or one out of range, non-DNA letters, an empty FASTA record,
// text that is not valid UTF-8 with the byte or bpe tokenizer, text the bpe tokenizer encodes to no token) are either
// fatal (bad_rows = "error": mt::Error(Data) "FILE:LINE: problem") or skipped and counted (bad_rows = "skip"; the
// first few are kept as examples for the log). A file with no usable row is always an error, and so is a class
// with no training example (an empty class file, a label no row carries, or all of a class held out).
// Sequences longer than max_len tokens are truncated (counted).
//
// Splits: the validation set is val_path when given, else the last val_fraction of a seeded permutation of the
// training rows (so it is fixed by the seed and never overlaps training). With test_fraction > 0 (no val_path) the
// last test_fraction of that permutation is a test split, never trained on nor scored during training, and the
// validation rows are the val_fraction before it; with test_fraction 0 the splits are the same as without it. Training
// sample i (a global index) is row perm_e[i mod n] of epoch e = i / n, perm_e a Philox-seeded shuffle of (seed, e):
// batches are a pure function of (seed, samples seen), which makes resumes exact. With rc_augment (DNA), training
// sample i is reverse-complemented with probability 1/2, also decided by (seed, i). Batches are padded to their
// longest member with token 0 ([PAD] for DNA, NUL for bytes); Batch::mask marks real tokens; Batch::labels holds the
// class, kIgnoreIndex (core/ignore_index.h) for padding rows of the last validation batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"

namespace mt::data {

class BpeTokenizer;

struct LabelledOptions {
  std::string format = "tsv";      // tsv | csv | jsonl | fasta
  std::vector<std::string> files;  // tsv / csv / jsonl: one training file; fasta: one file per class
  std::string val_path;            // optional separate validation file (tsv / csv / jsonl)
  std::string text_column = "sentence", label_column = "label";
  std::string tokenizer = "byte";  // byte | dna | bpe
  std::string tokenizer_path;      // bpe: the HuggingFace tokenizer.json
  int64_t num_classes = 2;
  int64_t max_len = 512;
  double val_fraction = 0.1;   // when there is no val_path
  double test_fraction = 0.0;  // when there is no val_path: held out for `evaluate --split test`
  uint64_t split_seed = 0;
  std::string bad_rows = "error";  // error | skip
  bool rc_augment = false;
  std::vector<std::string> label_names;  // class names in class order (see above); empty: decided by the data
  bool integer_labels = false;           // labels must be integers (a validation file of integer-labelled data)
};

struct Example {
  std::vector<int32_t> ids;
  int64_t label = 0;
};

struct ReadStats {
  int64_t rows = 0, skipped = 0, truncated = 0;
  std::vector<std::string> skipped_examples;  // "FILE:LINE: problem", at most 5
};

// Reads one file (tsv / csv / jsonl) or the FASTA files of all classes. Throws mt::Error(Data), and
// mt::Error(Config) when the names found are not model.num_classes many. *label_names (optional) gets the class names
// in class order when the labels are names (o.label_names, or the names found), and is cleared for integer labels.
std::vector<Example> read_labelled(const LabelledOptions& o, const std::vector<std::string>& files, ReadStats* stats,
                                   std::vector<std::string>* label_names = nullptr);

// The class index of a label's text when the classes are fixed: one of `names` when there are names, else an
// integer in [0, num_classes). -1 with *problem set ("label 'x' is not an integer class index") otherwise.
int64_t class_index(const std::string& label, const std::vector<std::string>& names, int64_t num_classes,
                    std::string* problem);

// A row's text as token ids, as training reads it: tokenizer "dna" takes DNA letters (data/dna.h), "byte" the bytes
// of valid UTF-8 text, "bpe" the ids of `bpe` (required then); cut to max_len tokens (*truncated tells). Returns ""
// or the problem ("'U' at offset 3 is not a DNA letter (...)", "invalid UTF-8 at byte 4 of the text (...)",
// "empty text", "the text encodes to no token").
std::string encode_row_text(const std::string& text, const std::string& tokenizer, int64_t max_len,
                            std::vector<int32_t>& ids, bool* truncated, const BpeTokenizer* bpe = nullptr);

class LabelledDataset {
 public:
  explicit LabelledDataset(const LabelledOptions& o);

  Batch train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const;
  Batch val_batch(int64_t batch_index, int64_t batch_size) const;
  // The held-out rows of a split: "val" (validation) or "test" (empty without test_fraction).
  const std::vector<Example>& split(const std::string& name) const;
  int64_t num_val_batches(int64_t batch_size) const {
    return (static_cast<int64_t>(val_.size()) + batch_size - 1) / batch_size;
  }

  int64_t num_train() const { return static_cast<int64_t>(train_.size()); }
  int64_t num_val() const { return static_cast<int64_t>(val_.size()); }
  int64_t num_test() const { return static_cast<int64_t>(test_.size()); }
  const ReadStats& stats() const { return stats_; }
  std::vector<int64_t> class_counts() const;  // of the training split
  // "labelled:<format>:<tokenizer>:n=<rows>:fnv1a64:<hex of ids and labels>:split=<seed>/<val_fraction>"
  std::string fingerprint() const;
  int64_t vocab_size() const;
  // The class names in class order when the labels are names (see above); empty for integer labels.
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  Batch make_batch(const std::vector<const Example*>& rows, int64_t batch_size, const std::vector<bool>& rc) const;

  LabelledOptions o_;
  std::vector<Example> train_, val_, test_;
  ReadStats stats_;
  std::vector<std::string> label_names_;
  uint64_t hash_ = 0;
  int64_t vocab_ = 256;  // the tokenizer's ids
};

}  // namespace mt::data
