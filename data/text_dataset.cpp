#include "data/text_dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "data/bpe.h"
#include "data/dna.h"
#include "data/gz_reader.h"
#include "data/sample_rng.h"
#include "data/token_shards.h"

namespace mt::data {

namespace {

constexpr uint64_t kTextDomain =
    0x7465787464617461ULL;  // "textdata": separates this stream from other users of the seed

// The content of a text data file, decompressed when it is gzip (data/gz_reader.h: by its first bytes, whatever its
// name).
std::vector<uint8_t> read_file(const std::string& path) {
  MT_CHECK(!path.empty(), ErrorKind::Config, "data.path: no text file given (data.kind 'text' needs data.path)");
  struct stat st;
  MT_CHECK(::stat(path.c_str(), &st) == 0, ErrorKind::Data, "data.path: cannot open '", path,
           "': ", std::strerror(errno));
  MT_CHECK(S_ISREG(st.st_mode), ErrorKind::Data, "data.path: '", path, "' is not a regular file");
  std::vector<uint8_t> bytes;
  if (!is_gzip_file(path)) bytes.reserve(static_cast<size_t>(st.st_size));
  read_chunks(path, "data.path", [&](const char* c, size_t n) { bytes.insert(bytes.end(), c, c + n); });
  return bytes;
}

// A FASTA file, plain or gzip-compressed, as DNA tokens with [EOD] after each record.
std::vector<uint8_t> read_fasta_tokens(const std::string& path) {
  std::vector<uint8_t> out;
  read_fasta_dna(
      path, "data.path", [&](const uint8_t* ids, size_t n) { out.insert(out.end(), ids, ids + n); },
      [&] { out.push_back(static_cast<uint8_t>(kDnaEod)); });
  return out;
}

int64_t val_bytes(int64_t n, double f) { return static_cast<int64_t>(std::floor(static_cast<double>(n) * f)); }

// Both splits hold at least one window (the held-out one only when f > 0).
bool big_enough(int64_t n, double f, int64_t L) {
  const int64_t nv = val_bytes(n, f);
  return n - nv >= L && (f == 0.0 || nv >= L);
}

// The smallest file size that big_enough accepts (both conditions are monotone in n).
int64_t min_bytes(double f, int64_t L) {
  double est = static_cast<double>(L) / (1.0 - f);
  if (f > 0) est = std::max(est, static_cast<double>(L) / f);
  int64_t n = std::max<int64_t>(L, static_cast<int64_t>(est) - 2);
  while (!big_enough(n, f, L)) ++n;
  return n;
}

}  // namespace

uint64_t fnv1a64(const uint8_t* data, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

TextDataset::TextDataset(const std::string& path, double val_fraction, int64_t seq_len, const std::string& tokenizer,
                         const std::string& tokenizer_path)
    : path_(path), tokenizer_(tokenizer), seq_len_(seq_len) {
  const std::vector<std::string> shard_paths = shard_set_paths(path);
  const bool shard = !shard_paths.empty();
  MT_CHECK(shard || tokenizer == "byte" || tokenizer == "dna" || tokenizer == "bpe", ErrorKind::Config,
           "tokenizer.kind: data.kind text reads byte, dna or bpe tokens, got '", tokenizer, "'");
  MT_CHECK(std::isfinite(val_fraction) && val_fraction >= 0.0 && val_fraction < 1.0, ErrorKind::Config,
           "data.val_fraction: expected a value in [0, 1), got ", val_fraction);
  MT_CHECK(seq_len >= 2, ErrorKind::Config, "data.seq_len: expected at least 2 tokens, got ", seq_len);
  if (shard) {
    shard_ = std::make_shared<const TokenShardSet>(shard_paths);
    const std::string kind = shard_->info().tokenizer_kind();
    MT_CHECK(kind == tokenizer, ErrorKind::Config, "tokenizer.kind: ", tokenizer, ", but data.path '", path,
             "' is a token shard of the ", shard_->info().tokenizer, " tokenizer (set tokenizer.kind: ", kind, ")");
    if (shard_->info().eod_id != kShardNoEod) eod_ = shard_->info().eod_id;
  } else if (tokenizer == "dna") {
    MT_CHECK(!path.empty(), ErrorKind::Config, "data.path: no FASTA file given");
    struct stat st;
    MT_CHECK(::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode), ErrorKind::Data, "data.path: '", path,
             "' is not a readable regular file");
    bytes_ = read_fasta_tokens(path);
    eod_ = kDnaEod;
  } else if (tokenizer == "bpe") {
    MT_CHECK(!tokenizer_path.empty(), ErrorKind::Config, "tokenizer.path: tokenizer.kind bpe needs a tokenizer.json");
    const BpeTokenizer bpe = BpeTokenizer::load(tokenizer_path);
    {
      const std::vector<uint8_t> text = read_file(path);
      std::vector<int32_t> ids;
      try {
        ids = bpe.encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
      } catch (const Error& e) {
        throw Error(e.kind(), str("data.path: '", path, "': ", e.what()));
      }
      if (bpe.eos_id() >= 0) ids.push_back(bpe.eos_id());
      eod_ = bpe.eos_id();
      wide_.assign(ids.begin(), ids.end());
    }
    wide_vocab_ = bpe.vocab_size();
  } else {
    bytes_ = read_file(path);
  }
  const int64_t n = size();
  if (!big_enough(n, val_fraction, seq_len)) {
    throw Error(ErrorKind::Data,
                str("data.path: '", path, "' has ", n,
                    shard || wide_vocab_ > 0 ? " tokens"
                    : tokenizer == "dna"     ? " DNA tokens"
                                             : " bytes",
                    ", too small for data.seq_len ", seq_len, " with data.val_fraction ", val_fraction, ": at least ",
                    min_bytes(val_fraction, seq_len), " bytes are needed (one window of ", seq_len,
                    " bytes in the training split", val_fraction > 0 ? " and one in the held-out tail)" : ")"));
  }
  n_train_ = n - val_bytes(n, val_fraction);
  val_windows_ = val_fraction > 0 ? std::max<int64_t>(1, val_size() / seq_len) : 0;
  if (shard_) {
    hash_ = shard_->info().payload_fnv1a64;
  } else if (wide_vocab_ > 0) {
    // The bytes a shard would store (little-endian ids of the smallest dtype), so a file and its shard match.
    const uint32_t w = shard_dtype_for_vocab(static_cast<uint64_t>(wide_vocab_));
    std::vector<uint8_t> le(wide_.size() * w);
    for (size_t i = 0; i < wide_.size(); ++i)
      for (uint32_t k = 0; k < w; ++k) le[i * w + k] = static_cast<uint8_t>(wide_[i] >> (8 * k));
    hash_ = fnv1a64(le.data(), le.size());
  } else {
    hash_ = fnv1a64(bytes_.data(), bytes_.size());
  }
}

int64_t TextDataset::size() const {
  if (shard_) return shard_->size();
  return static_cast<int64_t>(wide_vocab_ > 0 ? wide_.size() : bytes_.size());
}

int64_t TextDataset::vocab_size() const {
  if (shard_) return shard_->info().vocab_size;
  if (wide_vocab_ > 0) return wide_vocab_;
  return tokenizer_ == "dna" ? 7 : 256;
}

void TextDataset::copy_tokens(int64_t start, int64_t n, int64_t* out) const {
  if (shard_) return shard_->read(start, n, out);
  if (wide_vocab_ > 0) {
    const uint32_t* w = wide_.data() + start;
    for (int64_t t = 0; t < n; ++t) out[t] = w[t];
    return;
  }
  const uint8_t* src = bytes_.data() + start;
  for (int64_t t = 0; t < n; ++t) out[t] = src[t];
}

std::string TextDataset::fingerprint() const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_));
  return str(tokenizer_ == "dna"    ? "dna:"
             : tokenizer_ == "byte" ? "bytes:"
                                    : tokenizer_ + ":",
             size(), ":fnv1a64:", hex);
}

int64_t TextDataset::train_start(uint64_t seed, int64_t sample) const {
  MT_CHECK(sample >= 0, ErrorKind::Internal, "TextDataset: negative sample index ", sample);
  SampleRng rng(seed, kTextDomain, static_cast<uint64_t>(sample));
  return static_cast<int64_t>(rng.below(static_cast<uint64_t>(n_train_ - seq_len_ + 1)));
}

int64_t TextDataset::val_start(int64_t window) const {
  MT_CHECK(window >= 0 && window < val_windows_, ErrorKind::Internal, "TextDataset: validation window ", window,
           " out of range [0, ", val_windows_, ")");
  // Evenly spaced over [n_train, size - seq_len]; spacing >= seq_len because W * seq_len <= n_val.
  const int64_t span = val_size() - seq_len_;
  const int64_t off = val_windows_ == 1 ? 0 : window * span / (val_windows_ - 1);
  return n_train_ + off;
}

Batch TextDataset::train_batch(uint64_t seed, int64_t first_sample, int64_t batch_size) const {
  MT_CHECK(batch_size >= 1 && first_sample >= 0, ErrorKind::Internal, "TextDataset::train_batch: batch_size ",
           batch_size, ", first_sample ", first_sample);
  const int64_t L = seq_len_;
  Batch b;
  b.ids = Tensor::empty({batch_size, L}, DType::I64);
  int64_t* ids = b.ids.data<int64_t>();
  for (int64_t r = 0; r < batch_size; ++r) {
    copy_tokens(train_start(seed, first_sample + r), L, ids + r * L);
  }
  b.targets = b.ids.clone();
  b.tokens = batch_size * L;
  return b;
}

int64_t TextDataset::num_val_batches(int64_t batch_size) const {
  MT_CHECK(batch_size >= 1, ErrorKind::Internal, "TextDataset::num_val_batches: batch_size ", batch_size);
  return (val_windows_ + batch_size - 1) / batch_size;
}

Batch TextDataset::val_batch(int64_t batch_index, int64_t batch_size) const {
  const int64_t nb = num_val_batches(batch_size);
  MT_CHECK(batch_index >= 0 && batch_index < nb, ErrorKind::Internal, "TextDataset::val_batch: batch ", batch_index,
           " out of range [0, ", nb, ") for batch size ", batch_size, " (", val_windows_, " held-out windows)");
  const int64_t L = seq_len_;
  const int64_t real = std::min(batch_size, val_windows_ - batch_index * batch_size);
  Batch b = padded_eval_batch(batch_size, L, real);
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t r = 0; r < real; ++r) {
    copy_tokens(val_start(batch_index * batch_size + r), L, ids + r * L);
    std::copy(ids + r * L, ids + (r + 1) * L, tg + r * L);
  }
  return b;
}

}  // namespace mt::data
