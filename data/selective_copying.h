// The selective copying task of the Mamba paper (Gu & Dao 2023, §4.1 and Figure 2): the model must remember a few
// data tokens scattered at random positions among noise and reproduce them, in order, after the context. Solving
// it needs content-aware (selective) state updates; a time-invariant convolution or SSM cannot.
//
// Tokens: 0 = noise, 1..copy_vocab = data, copy_vocab+1 = marker (vocab_size = copy_vocab + 2).
// With L = seq_len, K = copy_tokens, M = L - K (the context length):
//   ids[0, M)      K data tokens d_0..d_{K-1} (uniform in 1..copy_vocab) at K distinct random positions
//                  p_0 < ... < p_{K-1} (uniform among all K-subsets of [0, M)), noise 0 everywhere else
//   ids[M, L)      the marker
//   targets[M + j] = d_j for j = 0..K-1; -100 everywhere else
// With the model's next-token convention (logits[:, t] is scored against targets[:, t+1], nn/heads.h), d_0 is
// predicted at the last context position M-1 and d_j (j >= 1) at marker position M+j-1; the output at the last
// marker (L-1) is not scored.
//
// Example: L = 10, K = 3, copy_vocab = 8 (marker 9), data 5 2 7 at positions 1, 4, 6 (M = 7):
//   position  0    1    2    3    4    5    6    7    8    9
//   ids       0    5    0    0    2    0    7    9    9    9
//   targets   -    -    -    -    -    -    -    5    2    7      (- = -100)
//   scored by logits at position 6 -> 5, 7 -> 2, 8 -> 7.
//
// Determinism: training sample i is a pure function of (seed, i) (data/sample_rng.h); validation sample i comes
// from a fixed seed of its own, so every run (any seed) is evaluated on the same sequences. Validation has
// val_samples sequences; the last batch is padded with rows whose targets are all -100 and whose mask is 0.
#pragma once

#include <cstdint>
#include <string>

#include "data/batch.h"

namespace mt::data {

class SelectiveCopying {
 public:
  // Errors: mt::Error(Config) naming the data.* key (copy_tokens >= 1, copy_vocab >= 1,
  // seq_len > 2 * copy_tokens, val_samples >= 1).
  SelectiveCopying(int64_t seq_len, int64_t copy_tokens, int64_t copy_vocab, int64_t val_samples = 256);

  Batch train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const;
  Batch val_batch(int64_t batch_index, int64_t batch_size) const;  // 0 <= batch_index < num_val_batches
  int64_t num_val_batches(int64_t batch_size) const;               // ceil(val_samples / B)

  int64_t vocab_size() const { return copy_vocab_ + 2; }
  int64_t marker() const { return copy_vocab_ + 1; }
  int64_t seq_len() const { return seq_len_; }
  int64_t copy_tokens() const { return copy_tokens_; }
  int64_t copy_vocab() const { return copy_vocab_; }
  // "selective_copying:v1:seq_len=L:copy_tokens=K:copy_vocab=V" (v1 = this generator; a change to the sampling
  // must bump it so that resumes across it are refused).
  std::string fingerprint() const;

 private:
  // Writes one sequence (ids and targets rows of length seq_len) for sample `sample` of the stream (seed, domain).
  void fill(uint64_t seed, uint64_t domain, int64_t sample, int64_t* ids, int64_t* targets) const;

  int64_t seq_len_, copy_tokens_, copy_vocab_, val_samples_;
};

// Argmax accuracy on the scored positions of a batch, with the next-token shift: position t with
// targets[b, t] != -100 (t >= 1) is correct when argmax_v logits[b, t-1, v] == targets[b, t]. A NaN in the logit
// row counts as wrong. Computed on the CPU; logits may be any float dtype on any device.
struct CopyScore {
  int64_t correct = 0;
  int64_t scored = 0;
  double accuracy() const { return scored > 0 ? static_cast<double>(correct) / static_cast<double>(scored) : 0.0; }
};
CopyScore copy_score(const Tensor& logits /*[B, L, V]*/, const Batch& b);
// copy_score(...).accuracy(): the fraction correct (0 when nothing is scored).
double copy_accuracy(const Tensor& logits /*[B, L, V]*/, const Batch& b);

}  // namespace mt::data
