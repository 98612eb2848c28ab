#include "data/text_dataset.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <zlib.h>

#include "data/dna.h"
#include "data/sample_rng.h"

namespace mt::data {

namespace {

constexpr uint64_t kTextDomain = 0x7465787464617461ULL;  // "textdata": separates this stream from other users of the seed

// Closes a file descriptor on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::vector<uint8_t> read_file(const std::string& path) {
  MT_CHECK(!path.empty(), ErrorKind::Config, "data.path: no text file given (data.kind 'text' needs data.path)");
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  MT_CHECK(f.fd >= 0, ErrorKind::Data, "data.path: cannot open '", path, "': ", std::strerror(errno));
  struct stat st;
  MT_CHECK(::fstat(f.fd, &st) == 0, ErrorKind::Data, "data.path: cannot stat '", path, "': ", std::strerror(errno));
  MT_CHECK(S_ISREG(st.st_mode), ErrorKind::Data, "data.path: '", path, "' is not a regular file");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(f.fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    MT_CHECK(n >= 0, ErrorKind::Data, "data.path: cannot read '", path, "': ", std::strerror(errno));
    MT_CHECK(n > 0, ErrorKind::Data, "data.path: '", path, "' shrank while being read (", got, " of ",
             bytes.size(), " bytes)");
    got += static_cast<size_t>(n);
  }
  return bytes;
}

// A FASTA file, plain or gzip-compressed (zlib reads both), as DNA tokens with [EOD] after each record.
std::vector<uint8_t> read_fasta_tokens(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  MT_CHECK(f != nullptr, ErrorKind::Data, "data.path: cannot open '", path, "': ", std::strerror(errno));
  std::vector<uint8_t> out;
  std::string line;
  char buf[1 << 16];
  int64_t ln = 1, col = 0;
  bool header = false, any_record = false, at_line_start = true;
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      throw Error(ErrorKind::Data, str("data.path: '", path, "': cannot read (", msg, ")"));
    }
    if (n == 0) break;
    for (int i = 0; i < n; ++i) {
      const char c = buf[i];
      if (c == '\n') {
        ++ln;
        col = 0;
        header = false;
        at_line_start = true;
        continue;
      }
      ++col;
      if (header || c == '\r') continue;
      if (at_line_start && c == '>') {
        if (any_record && !out.empty() && out.back() != kDnaEod) out.push_back(static_cast<uint8_t>(kDnaEod));
        header = any_record = true;
        at_line_start = false;
        continue;
      }
      at_line_start = false;
      const int32_t t = dna_token(c);
      if (t < 0) {
        gzclose(f);
        throw Error(ErrorKind::Data,
                    str("data.path: ", path, ":", ln, ":", col, ": '",
                        (c >= 32 && c < 127) ? std::string(1, c) : str("\\x", std::hex, (int)(unsigned char)c),
                        "' is not a DNA letter (A C G T, N or an IUPAC ambiguity code)",
                        any_record ? "" : "; a FASTA file starts with a '>' header line"));
      }
      if (!any_record) {
        gzclose(f);
        throw Error(ErrorKind::Data, str("data.path: ", path, ":", ln, ": sequence before the first '>' header line"));
      }
      out.push_back(static_cast<uint8_t>(t));
    }
  }
  gzclose(f);
  if (!out.empty()) out.push_back(static_cast<uint8_t>(kDnaEod));
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

TextDataset::TextDataset(const std::string& path, double val_fraction, int64_t seq_len, const std::string& tokenizer)
    : path_(path), tokenizer_(tokenizer), seq_len_(seq_len) {
  MT_CHECK(tokenizer == "byte" || tokenizer == "dna", ErrorKind::Config, "tokenizer.kind: data.kind text reads byte "
           "or dna tokens, got '", tokenizer, "'");
  MT_CHECK(std::isfinite(val_fraction) && val_fraction >= 0.0 && val_fraction < 1.0, ErrorKind::Config,
           "data.val_fraction: expected a value in [0, 1), got ", val_fraction);
  MT_CHECK(seq_len >= 2, ErrorKind::Config, "data.seq_len: expected at least 2 tokens, got ", seq_len);
  if (tokenizer == "dna") {
    MT_CHECK(!path.empty(), ErrorKind::Config, "data.path: no FASTA file given");
    struct stat st;
    MT_CHECK(::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode), ErrorKind::Data, "data.path: '", path,
             "' is not a readable regular file");
    bytes_ = read_fasta_tokens(path);
  } else {
    bytes_ = read_file(path);
  }
  const int64_t n = size();
  if (!big_enough(n, val_fraction, seq_len)) {
    throw Error(ErrorKind::Data,
                str("data.path: '", path, "' has ", n, tokenizer == "dna" ? " DNA tokens" : " bytes", ", too small for data.seq_len ", seq_len,
                    " with data.val_fraction ", val_fraction, ": at least ", min_bytes(val_fraction, seq_len),
                    " bytes are needed (one window of ", seq_len, " bytes in the training split",
                    val_fraction > 0 ? " and one in the held-out tail)" : ")"));
  }
  n_train_ = n - val_bytes(n, val_fraction);
  val_windows_ = val_fraction > 0 ? std::max<int64_t>(1, val_size() / seq_len) : 0;
  hash_ = fnv1a64(bytes_.data(), bytes_.size());
}

std::string TextDataset::fingerprint() const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_));
  return str(tokenizer_ == "dna" ? "dna:" : "bytes:", size(), ":fnv1a64:", hex);
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
    const uint8_t* src = bytes_.data() + train_start(seed, first_sample + r);
    for (int64_t t = 0; t < L; ++t) ids[r * L + t] = src[t];
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
  MT_CHECK(batch_index >= 0 && batch_index < nb, ErrorKind::Internal, "TextDataset::val_batch: batch ",
           batch_index, " out of range [0, ", nb, ") for batch size ", batch_size, " (", val_windows_,
           " held-out windows)");
  const int64_t L = seq_len_;
  const int64_t real = std::min(batch_size, val_windows_ - batch_index * batch_size);
  Batch b = padded_eval_batch(batch_size, L, real);
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t r = 0; r < real; ++r) {
    const uint8_t* src = bytes_.data() + val_start(batch_index * batch_size + r);
    for (int64_t t = 0; t < L; ++t) ids[r * L + t] = tg[r * L + t] = src[t];
  }
  return b;
}

}  // namespace mt::data
