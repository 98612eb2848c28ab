// Byte-level language-modelling data from one file: every byte is a token (vocabulary 0..255).
//
// Split: with N bytes and val_fraction f, the last n_val = floor(N * f) bytes are held out and the first
// n_train = N - n_val bytes are for training.
//
// Training: sample i (a global index: the trainer's samples_seen counts them) is the window
//   bytes[start_i, start_i + seq_len),  start_i uniform in [0, n_train - seq_len]
// where start_i comes from Philox with a key derived from the run seed and counter i (data/sample_rng.h). A batch
// of B samples from index first is samples first .. first+B-1, so batches are a pure function of
// (seed, samples_seen) and a resumed run continues with exactly the same data.
//
// Validation: W = max(1, floor(n_val / seq_len)) fixed windows, evenly spaced over the held-out tail (the first
// starts at its first byte, the last ends at its last byte; they never overlap). Batch k holds windows
// kB .. kB+B-1; the last batch is padded with rows whose targets are all -100 and whose mask is 0, so every
// window is evaluated exactly once whatever B is. Average losses over batches weighted by Batch::tokens.
//
// Targets follow the model's next-token convention (data/batch.h): targets == ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"

namespace mt::data {

class TextDataset {
 public:
  // Reads the whole file. Errors: mt::Error(Data) naming the path when it is missing, unreadable, not a regular
  // file, or too small (the message says how many bytes seq_len and val_fraction need);
  // mt::Error(Config) naming data.val_fraction / data.seq_len for values out of range.
  // tokenizer "byte": every byte of the file is a token. "dna": the file is FASTA (gzip-compressed or not) and its
  // records become DNA tokens (data/dna.h) separated by [EOD]; a non-DNA letter is mt::Error(Data) naming
  // file:line:column. The split, windows and fingerprint then work on those tokens.
  TextDataset(const std::string& path, double val_fraction, int64_t seq_len, const std::string& tokenizer = "byte");

  Batch train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const;
  Batch val_batch(int64_t batch_index, int64_t batch_size) const;  // 0 <= batch_index < num_val_batches
  int64_t num_val_batches(int64_t batch_size) const;  // ceil(W / B); 0 when val_fraction == 0
  int64_t num_val_windows() const { return val_windows_; }

  // "bytes:<size>:fnv1a64:<16 hex digits>" of the whole file content: stored in checkpoints so that a resume on
  // different data is refused.
  std::string fingerprint() const;
  int64_t vocab_size() const { return tokenizer_ == "dna" ? 7 : 256; }
  int64_t seq_len() const { return seq_len_; }
  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  int64_t train_size() const { return n_train_; }
  int64_t val_size() const { return size() - n_train_; }
  // Start offset (in the file) of training sample `sample` / of validation window `window`.
  int64_t train_start(uint64_t seed, int64_t sample) const;
  int64_t val_start(int64_t window) const;

 private:
  std::string path_, tokenizer_;
  std::vector<uint8_t> bytes_;  // the tokens (bytes, or DNA ids)
  int64_t seq_len_ = 0;
  int64_t n_train_ = 0;
  int64_t val_windows_ = 0;
  uint64_t hash_ = 0;
};

// 64-bit FNV-1a hash of a byte range (the content part of fingerprints).
uint64_t fnv1a64(const uint8_t* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL);

}  // namespace mt::data
