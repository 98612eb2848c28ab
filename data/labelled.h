// Labelled sequence-classification data: text rows from TSV / CSV / JSONL files, or DNA records from FASTA files
// given one per class, tokenized (bytes, DNA characters, or the byte-level BPE of a tokenizer.json: data/bpe.h), with
// deterministic splits and padded batches.
//
// Readers (file and 1-based line in every message):
//   tsv    first line is a header naming the columns; fields split on tabs, no quoting.
//   csv    RFC 4180: a header line, fields separated by commas, "..." quoting with "" for a quote, quoted fields may
//          span lines.
//   jsonl  one JSON object per line; the text field must be a string, the label an integer (or a string holding one).
//   fasta  '>' starts a record (header text ignored), sequence lines are concatenated; CRLF line ends are accepted;
//          file k of the list holds class k.
// Labels of tsv / csv / jsonl are integers 0 .. num_classes - 1. Any file may be gzip-compressed (recognised by its
// first bytes, data/gz_reader.h).
// Bad rows (wrong column count, empty text, a label that is not an integer or is out of range, non-DNA letters,
// an empty FASTA record, text that is not valid UTF-8 with the byte tokenizer is fine: bytes are bytes) are either
// fatal (bad_rows = "error": mt::Error(Data) "FILE:LINE: problem") or skipped and counted (bad_rows = "skip"; the
// first few are kept as examples for the log). A file with no usable row is always an error, and so is a class
// with no training example (an empty class file, a label no row carries, or all of a class held out).
// Sequences longer than max_len tokens are truncated (counted).
//
// Splits: the validation set is val_path when given, else the last val_fraction of a seeded permutation of the
// training rows (so it is fixed by the seed and never overlaps training). Training sample i (a global index) is
// row perm_e[i mod n] of epoch e = i / n, perm_e a Philox-seeded shuffle of (seed, e): batches are a pure function
// of (seed, samples seen), which makes resumes exact. With rc_augment (DNA), training sample i is reverse-
// complemented with probability 1/2, also decided by (seed, i).
// Batches are padded to their longest member with token 0 ([PAD] for DNA, NUL for bytes); Batch::mask marks real
// tokens; Batch::labels holds the class, -100 for padding rows of the last validation batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"

namespace mt::data {

struct LabelledOptions {
  std::string format = "tsv";      // tsv | csv | jsonl | fasta
  std::vector<std::string> files;  // tsv / csv / jsonl: one training file; fasta: one file per class
  std::string val_path;            // optional separate validation file (tsv / csv / jsonl)
  std::string text_column = "sentence", label_column = "label";
  std::string tokenizer = "byte";  // byte | dna | bpe
  std::string tokenizer_path;      // bpe: the HuggingFace tokenizer.json
  int64_t num_classes = 2;
  int64_t max_len = 512;
  double val_fraction = 0.1;  // when there is no val_path
  uint64_t split_seed = 0;
  std::string bad_rows = "error";  // error | skip
  bool rc_augment = false;
};

struct Example {
  std::vector<int32_t> ids;
  int64_t label = 0;
};

struct ReadStats {
  int64_t rows = 0, skipped = 0, truncated = 0;
  std::vector<std::string> skipped_examples;  // "FILE:LINE: problem", at most 5
};

// Reads one file (tsv / csv / jsonl) or the FASTA files of all classes. Throws mt::Error(Data).
std::vector<Example> read_labelled(const LabelledOptions& o, const std::vector<std::string>& files, ReadStats* stats);

class LabelledDataset {
 public:
  explicit LabelledDataset(const LabelledOptions& o);

  Batch train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const;
  Batch val_batch(int64_t batch_index, int64_t batch_size) const;
  int64_t num_val_batches(int64_t batch_size) const {
    return (static_cast<int64_t>(val_.size()) + batch_size - 1) / batch_size;
  }

  int64_t num_train() const { return static_cast<int64_t>(train_.size()); }
  int64_t num_val() const { return static_cast<int64_t>(val_.size()); }
  const ReadStats& stats() const { return stats_; }
  std::vector<int64_t> class_counts() const;  // of the training split
  // "labelled:<format>:<tokenizer>:n=<rows>:fnv1a64:<hex of ids and labels>:split=<seed>/<val_fraction>"
  std::string fingerprint() const;
  int64_t vocab_size() const;

 private:
  Batch make_batch(const std::vector<const Example*>& rows, int64_t batch_size, const std::vector<bool>& rc) const;

  LabelledOptions o_;
  std::vector<Example> train_, val_;
  ReadStats stats_;
  uint64_t hash_ = 0;
  int64_t vocab_ = 256;  // the tokenizer's ids
};

}  // namespace mt::data
