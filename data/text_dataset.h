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
//
// Token shards (data/token_shards.h, written by `mamba-train prepare`): when the file at the path starts with the
// shard magic, the tokens are the shard's memory-mapped payload (validated first) and everything above applies to
// them unchanged, so a shard holding the same tokens as a file gives the same batches and the same fingerprint. A
// path that does not exist while PATH.000.bin does names the split set PATH.000.bin, PATH.001.bin, ... read as one
// corpus (data/token_shards.h shard_set_paths), with the fingerprint of the unsplit shard.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"

namespace mt::data {

class TokenShardSet;  // data/token_shards.h

class TextDataset {
 public:
  // Reads the whole file, decompressed when it is gzip (data/gz_reader.h: by its first bytes). Errors:
  // mt::Error(Data) naming the path when it is missing, unreadable, not a regular file, damaged gzip, a gzipped token
  // shard, or too small (the message says how many bytes seq_len and val_fraction need);
  // mt::Error(Config) naming data.val_fraction / data.seq_len for values out of range.
  // tokenizer "byte": every byte of the content is a token. "dna": the file is FASTA and its
  // records become DNA tokens (data/dna.h) separated by [EOD]; a non-DNA letter is mt::Error(Data) naming
  // file:line:column. The split, windows and fingerprint then work on those tokens. A token shard (any tokenizer)
  // must have been written by `tokenizer` (else mt::Error(Config) naming tokenizer.kind); its problems are
  // mt::Error(Data) from data/token_shards.h.
  // "bpe": the file is UTF-8 text encoded with the byte-level BPE of `tokenizer_path` (data/bpe.h) as one document,
  // followed by <|endoftext|> when the tokenizer has it (the tokens `mamba-train prepare --tokenizer bpe` writes for
  // the file, with the same fingerprint); invalid UTF-8 is mt::Error(Data) naming the file and the byte offset.
  TextDataset(const std::string& path, double val_fraction, int64_t seq_len, const std::string& tokenizer = "byte",
              const std::string& tokenizer_path = "");

  Batch train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const;
  Batch val_batch(int64_t batch_index, int64_t batch_size) const;  // 0 <= batch_index < num_val_batches
  int64_t num_val_batches(int64_t batch_size) const;               // ceil(W / B); 0 when val_fraction == 0
  int64_t num_val_windows() const { return val_windows_; }

  // "bytes:<size>:fnv1a64:<16 hex digits>" of the whole file content: stored in checkpoints so that a resume on
  // different data is refused.
  std::string fingerprint() const;
  int64_t vocab_size() const;
  // The end-of-document token of these tokens (DNA [EOD], BPE <|endoftext|>, a shard's eod id), or -1 (bytes).
  int64_t eod_id() const { return eod_; }
  bool from_shard() const { return shard_ != nullptr; }
  int64_t seq_len() const { return seq_len_; }
  const std::string& path() const { return path_; }
  int64_t size() const;
  int64_t train_size() const { return n_train_; }
  int64_t val_size() const { return size() - n_train_; }
  // Start offset (in the file) of training sample `sample` / of validation window `window`.
  int64_t train_start(uint64_t seed, int64_t sample) const;
  int64_t val_start(int64_t window) const;

 private:
  std::string path_, tokenizer_;
  void copy_tokens(int64_t start, int64_t n, int64_t* out) const;  // tokens [start, start + n) from either source
  std::vector<uint8_t> bytes_;                                     // the tokens (bytes, or DNA ids) read from a file
  std::vector<uint32_t> wide_;                                     // or: BPE tokens encoded from a file
  int64_t wide_vocab_ = 0;                                         // their vocabulary (0: not BPE)
  int64_t eod_ = -1;
  std::shared_ptr<const TokenShardSet> shard_;  // or: the tokens of memory-mapped shards
  int64_t seq_len_ = 0;
  int64_t n_train_ = 0;
  int64_t val_windows_ = 0;
  uint64_t hash_ = 0;
};

// 64-bit FNV-1a hash of a byte range (the content part of fingerprints).
uint64_t fnv1a64(const uint8_t* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL);

}  // namespace mt::data
