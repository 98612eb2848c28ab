#include "data/selective_copying.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/sample_rng.h"

namespace mt::data {

namespace {

constexpr uint64_t kTrainDomain = 0x73656c636f707931ULL;  // "selcopy1"
constexpr uint64_t kValDomain = 0x73656c636f707632ULL;    // "selcopv2"
constexpr uint64_t kValSeed = 0x76616c6964617465ULL;      // "validate": fixed, whatever the run seed

}  // namespace

SelectiveCopying::SelectiveCopying(int64_t seq_len, int64_t copy_tokens, int64_t copy_vocab, int64_t val_samples)
    : seq_len_(seq_len), copy_tokens_(copy_tokens), copy_vocab_(copy_vocab), val_samples_(val_samples) {
  MT_CHECK(copy_tokens >= 1, ErrorKind::Config, "data.copy_tokens: expected at least 1, got ", copy_tokens);
  MT_CHECK(copy_vocab >= 1, ErrorKind::Config, "data.copy_vocab: expected at least 1, got ", copy_vocab);
  MT_CHECK(seq_len > 2 * copy_tokens, ErrorKind::Config, "data.seq_len: selective copying needs seq_len > 2 * ",
           "copy_tokens (", copy_tokens, " data tokens in the context and ", copy_tokens,
           " markers after it), got seq_len ", seq_len);
  MT_CHECK(val_samples >= 1, ErrorKind::Config, "data.val_samples: expected at least 1, got ", val_samples);
}

std::string SelectiveCopying::fingerprint() const {
  return str("selective_copying:v1:seq_len=", seq_len_, ":copy_tokens=", copy_tokens_, ":copy_vocab=", copy_vocab_);
}

void SelectiveCopying::fill(uint64_t seed, uint64_t domain, int64_t sample, int64_t* ids, int64_t* targets) const {
  const int64_t L = seq_len_, K = copy_tokens_, M = L - K;
  SampleRng rng(seed, domain, static_cast<uint64_t>(sample));
  // Floyd's algorithm: K distinct positions in [0, M), every K-subset equally likely, K draws.
  std::vector<int64_t> pos;
  pos.reserve(static_cast<size_t>(K));
  for (int64_t j = M - K; j < M; ++j) {
    const int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j + 1)));
    pos.push_back(std::find(pos.begin(), pos.end(), t) == pos.end() ? t : j);
  }
  std::sort(pos.begin(), pos.end());
  std::fill(ids, ids + M, int64_t{0});
  std::fill(ids + M, ids + L, marker());
  std::fill(targets, targets + L, kIgnoreIndex);
  for (int64_t j = 0; j < K; ++j) {
    const int64_t tok = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(copy_vocab_)));
    ids[pos[static_cast<size_t>(j)]] = tok;
    targets[M + j] = tok;
  }
}

Batch SelectiveCopying::train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const {
  MT_CHECK(batch_size >= 1 && first_sample >= 0, ErrorKind::Internal, "SelectiveCopying::train_batch: batch_size ",
           batch_size, ", first_sample ", first_sample);
  const int64_t L = seq_len_;
  Batch b;
  b.ids = Tensor::empty({batch_size, L}, DType::I64);
  b.targets = Tensor::empty({batch_size, L}, DType::I64);
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t r = 0; r < batch_size; ++r) fill(seed, kTrainDomain, first_sample + r, ids + r * L, tg + r * L);
  b.tokens = batch_size * L;
  return b;
}

int64_t SelectiveCopying::num_val_batches(int64_t batch_size) const {
  MT_CHECK(batch_size >= 1, ErrorKind::Internal, "SelectiveCopying::num_val_batches: batch_size ", batch_size);
  return (val_samples_ + batch_size - 1) / batch_size;
}

Batch SelectiveCopying::val_batch(int64_t batch_index, int64_t batch_size) const {
  const int64_t nb = num_val_batches(batch_size);
  MT_CHECK(batch_index >= 0 && batch_index < nb, ErrorKind::Internal, "SelectiveCopying::val_batch: batch ",
           batch_index, " out of range [0, ", nb, ") for batch size ", batch_size, " (", val_samples_,
           " validation samples)");
  const int64_t L = seq_len_;
  const int64_t real = std::min(batch_size, val_samples_ - batch_index * batch_size);
  Batch b = padded_eval_batch(batch_size, L, real);
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t r = 0; r < real; ++r) fill(kValSeed, kValDomain, batch_index * batch_size + r, ids + r * L, tg + r * L);
  return b;
}

namespace {

template <typename T>
CopyScore score_rows(const T* lg, const int64_t* tg, int64_t B, int64_t L, int64_t V) {
  CopyScore s;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 1; t < L; ++t) {
      const int64_t target = tg[b * L + t];
      if (target == kIgnoreIndex) continue;
      ++s.scored;
      const T* row = lg + (b * L + t - 1) * V;
      int64_t best = 0;
      bool nan = false;
      for (int64_t v = 0; v < V; ++v) {
        if (std::isnan(row[v])) nan = true;
        if (row[v] > row[best]) best = v;
      }
      if (!nan && best == target) ++s.correct;
    }
  }
  return s;
}

}  // namespace

CopyScore copy_score(const Tensor& logits, const Batch& b) {
  MT_CHECK_SHAPE(logits.defined() && b.targets.defined(), "copy_score: logits and targets must be defined");
  MT_CHECK_SHAPE(logits.dim() == 3 && b.targets.dim() == 2 && logits.size(0) == b.targets.size(0) &&
                     logits.size(1) == b.targets.size(1),
                 "copy_score: expected logits [B, L, V] and targets [B, L], got logits ", logits.describe(),
                 " and targets ", b.targets.describe());
  MT_CHECK_SHAPE(b.targets.dtype() == DType::I64, "copy_score: targets must be i64, got ", b.targets.describe());
  MT_CHECK_SHAPE(is_floating(logits.dtype()), "copy_score: logits must be a float dtype, got ", logits.describe());
  const int64_t B = logits.size(0), L = logits.size(1), V = logits.size(2);
  Tensor tg = b.targets.detach().to(Device::cpu()).contiguous();
  Tensor lg = logits.detach().to(Device::cpu());
  if (lg.dtype() != DType::F64) lg = lg.to(DType::F32);  // bf16 / f16 widen exactly
  lg = lg.contiguous();
  if (B == 0 || L == 0 || V == 0) return CopyScore{};
  return lg.dtype() == DType::F64 ? score_rows(lg.data<double>(), tg.data<int64_t>(), B, L, V)
                                  : score_rows(lg.data<float>(), tg.data<int64_t>(), B, L, V);
}

double copy_accuracy(const Tensor& logits, const Batch& b) { return copy_score(logits, b).accuracy(); }

}  // namespace mt::data
