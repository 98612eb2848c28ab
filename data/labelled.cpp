#include "data/labelled.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "data/gz_reader.h"
#include "data/sample_rng.h"
#include "data/text_dataset.h"

namespace mt::data {

namespace {

constexpr uint64_t kSplitDomain = 0x73706c6974303031ULL;  // "split001"
constexpr uint64_t kEpochDomain = 0x65706f6368303031ULL;  // "epoch001"
constexpr uint64_t kRcDomain = 0x7263617567303031ULL;     // "rcaug001"

// Text from a data file, made safe for a one-line message: printable ASCII kept, everything else as \xNN, cut after
// 60 characters.
std::string printable(const std::string& t) {
  std::string out;
  for (size_t i = 0; i < t.size() && i < 60; ++i) {
    const unsigned char c = static_cast<unsigned char>(t[i]);
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (t.size() > 60) out += "...";
  return out;
}

// Offset of the first byte that does not start a well-formed UTF-8 sequence (no overlongs, no surrogates, at most
// U+10FFFF), or -1.
int64_t first_invalid_utf8(const std::string& t) {
  for (size_t i = 0; i < t.size();) {
    const unsigned char c = static_cast<unsigned char>(t[i]);
    size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : (c >> 4) == 0xe ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || i + len > t.size()) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(t[i + k]) & 0xc0) != 0x80) return static_cast<int64_t>(i);
    const unsigned char c1 = static_cast<unsigned char>(t[i + 1 < t.size() ? i + 1 : i]);
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90))
      return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

// Collects rows, applying the bad-row policy.
struct Sink {
  const LabelledOptions& o;
  ReadStats* st;
  std::vector<Example> out;
  const BpeTokenizer* bpe = nullptr;  // tokenizer bpe

  void bad(const std::string& where, const std::string& problem) {
    const std::string msg = where + ": " + problem;
    MT_CHECK(o.bad_rows == "skip", ErrorKind::Data, msg, " (data.bad_rows: skip would skip and count such rows)");
    ++st->skipped;
    if (st->skipped_examples.size() < 5) st->skipped_examples.push_back(msg);
  }
  // text: the row's text (bytes, or DNA letters); label_text: "" when the label is given as `label`.
  void add(const std::string& where, const std::string& text, const std::string& label_text, int64_t label) {
    if (text.empty()) return bad(where, "empty text");
    if (!label_text.empty() || label < 0) {
      int64_t v = -1;
      const char* b = label_text.data();
      const char* e = b + label_text.size();
      auto r = std::from_chars(b, e, v);
      if (label_text.empty() || r.ec != std::errc() || r.ptr != e)
        return bad(where, str("label '", printable(label_text), "' is not an integer class index"));
      label = v;
    }
    if (label < 0 || label >= o.num_classes)
      return bad(where, str("label ", label, " is outside [0, ", o.num_classes, ") (model.num_classes)"));
    Example ex;
    ex.label = label;
    if (o.tokenizer == "dna") {
      const int64_t at = encode_dna(text, ex.ids);
      if (at >= 0) {
        const char c = text[static_cast<size_t>(at)];
        return bad(where, str("'", printable(std::string(1, c)), "' at offset ", at,
                              " is not a DNA letter (A C G T, N or an IUPAC ambiguity code)"));
      }
    } else if (bpe) {
      try {
        const std::vector<int32_t> ids = bpe->encode(text);
        ex.ids.assign(ids.begin(), ids.end());
      } catch (const Error& e) {
        return bad(where, e.what());  // invalid UTF-8, named by its byte offset
      }
      if (ex.ids.empty()) return bad(where, "the text encodes to no token");
    } else {
      // Text files are UTF-8: a broken sequence means a corrupt or mis-encoded file (Latin-1, UTF-16), which the
      // byte tokenizer would otherwise learn silently.
      const int64_t bad_at = first_invalid_utf8(text);
      if (bad_at >= 0)
        return bad(where, str("invalid UTF-8 at byte ", bad_at, " of the text (byte 0x", std::hex,
                              static_cast<int>(static_cast<unsigned char>(text[static_cast<size_t>(bad_at)])), std::dec,
                              "; the file must be UTF-8)"));
      ex.ids.assign(text.begin(), text.end());
      for (int32_t& t : ex.ids) t &= 0xff;
    }
    if (static_cast<int64_t>(ex.ids.size()) > o.max_len) {
      ex.ids.resize(static_cast<size_t>(o.max_len));
      ++st->truncated;
    }
    ++st->rows;
    out.push_back(std::move(ex));
  }
};

bool h_has_tab(const std::string& h) { return h.find('\t') != std::string::npos; }

// Splits the header line into names; returns the indices of text and label columns.
std::pair<size_t, size_t> find_columns(const std::vector<std::string>& header, const LabelledOptions& o,
                                       const std::string& path) {
  auto find = [&](const std::string& name, const char* key) {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      std::string have;
      for (const auto& h : header) have += (have.empty() ? "'" : ", '") + printable(h) + "'";
      if (header.size() == 1 && o.format == "csv" && h_has_tab(header[0])) have += " (a TSV file? data.format: tsv)";
      throw Error(ErrorKind::Data, str(path, ":1: no column '", name, "' (", key, "); the header has ", have));
    }
    return static_cast<size_t>(it - header.begin());
  };
  return {find(o.text_column, "data.text_column"), find(o.label_column, "data.label_column")};
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> f;
  size_t s = 0;
  for (;;) {
    const size_t t = line.find('\t', s);
    f.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
    if (t == std::string::npos) return f;
    s = t + 1;
  }
}

void strip_cr(std::string& line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
}

void read_tsv(const std::string& path, Sink& sink) {
  std::istringstream in(read_content(path));
  std::string line;
  MT_CHECK(static_cast<bool>(std::getline(in, line)), ErrorKind::Data, path, ": empty file (expected a header line)");
  strip_cr(line);
  const std::vector<std::string> header = split_tabs(line);
  const auto cols = find_columns(header, sink.o, path);
  for (int64_t ln = 2; std::getline(in, line); ++ln) {
    strip_cr(line);
    if (line.empty()) continue;
    const std::vector<std::string> f = split_tabs(line);
    const std::string where = str(path, ":", ln);
    if (f.size() != header.size()) {
      sink.bad(where, str(f.size(), " fields, the header has ", header.size()));
      continue;
    }
    sink.add(where, f[cols.first], f[cols.second], -1);
  }
}

// RFC 4180 records: returns false at end of input. `line` is the 1-based line the record starts on.
bool next_csv_record(const std::string& s, size_t& pos, int64_t& line, std::vector<std::string>& fields,
                     const std::string& path) {
  fields.clear();
  if (pos >= s.size()) return false;
  std::string cur;
  bool quoted = false, field_start = true;
  const int64_t start_line = line;
  while (pos < s.size()) {
    const char c = s[pos++];
    if (quoted) {
      if (c == '"') {
        if (pos < s.size() && s[pos] == '"') {
          cur += '"';
          ++pos;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        cur += c;
      }
      continue;
    }
    if (c == '"' && field_start) {
      quoted = true;
      field_start = false;
    } else if (c == ',') {
      fields.push_back(cur);
      cur.clear();
      field_start = true;
    } else if (c == '\n') {
      ++line;
      if (!cur.empty() && cur.back() == '\r') cur.pop_back();
      fields.push_back(cur);
      return true;
    } else {
      cur += c;
      field_start = false;
    }
  }
  MT_CHECK(!quoted, ErrorKind::Data, path, ":", start_line,
           ": a quoted field is not closed before the end of the file");
  if (!cur.empty() && cur.back() == '\r') cur.pop_back();
  fields.push_back(cur);
  return true;
}

void read_csv(const std::string& path, Sink& sink) {
  const std::string s = read_content(path);
  size_t pos = 0;
  int64_t line = 1;
  std::vector<std::string> header, f;
  MT_CHECK(next_csv_record(s, pos, line, header, path), ErrorKind::Data, path, ": empty file (expected a header)");
  const auto cols = find_columns(header, sink.o, path);
  for (;;) {
    const int64_t ln = line;
    if (!next_csv_record(s, pos, line, f, path)) break;
    if (f.size() == 1 && f[0].empty()) continue;  // blank line
    const std::string where = str(path, ":", ln);
    if (f.size() != header.size()) {
      sink.bad(where, str(f.size(), " fields, the header has ", header.size()));
      continue;
    }
    sink.add(where, f[cols.first], f[cols.second], -1);
  }
}

void read_jsonl(const std::string& path, Sink& sink) {
  std::istringstream in(read_content(path));
  std::string line;
  for (int64_t ln = 1; std::getline(in, line); ++ln) {
    strip_cr(line);
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = str(path, ":", ln);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      sink.bad(where, "not a JSON object");
      continue;
    }
    const std::string& tc = sink.o.text_column;
    const std::string& lc = sink.o.label_column;
    if (!j.contains(tc) || !j[tc].is_string()) {
      sink.bad(where, str("no string field '", tc, "' (data.text_column)"));
      continue;
    }
    if (!j.contains(lc)) {
      sink.bad(where, str("no field '", lc, "' (data.label_column)"));
      continue;
    }
    const nlohmann::json& lv = j[lc];
    if (lv.is_number_integer()) {
      sink.add(where, j[tc].get<std::string>(), "", lv.get<int64_t>());
    } else if (lv.is_string()) {
      sink.add(where, j[tc].get<std::string>(), lv.get<std::string>().empty() ? " " : lv.get<std::string>(), -1);
    } else {
      sink.bad(where, str("label ", lv.dump(), " is not an integer class index"));
    }
  }
}

void read_fasta(const std::string& path, int64_t label, Sink& sink) {
  std::istringstream in(read_content(path));
  std::string line, seq;
  int64_t rec_line = 0;
  auto flush = [&]() {
    if (rec_line == 0) return;
    const std::string where = str(path, ":", rec_line);
    if (seq.empty())
      sink.bad(where, "empty FASTA record");
    else
      sink.add(where, seq, "", label);
    seq.clear();
  };
  for (int64_t ln = 1; std::getline(in, line); ++ln) {
    strip_cr(line);
    if (!line.empty() && line[0] == '>') {
      flush();
      rec_line = ln;
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (rec_line == 0) {
      sink.bad(str(path, ":", ln), "sequence before the first '>' header line");
      continue;
    }
    seq += line;
  }
  flush();
}

uint64_t fnv_add(uint64_t h, const void* p, size_t n) { return fnv1a64(static_cast<const uint8_t*>(p), n, h); }

// Philox-seeded Fisher-Yates permutation of 0..n-1.
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t domain, uint64_t stream) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  SampleRng rng(seed, domain, stream);
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
  return p;
}

}  // namespace

std::vector<Example> read_labelled(const LabelledOptions& o, const std::vector<std::string>& files, ReadStats* stats) {
  ReadStats local;
  ReadStats* st = stats ? stats : &local;
  Sink sink{o, st, {}};
  BpeTokenizer bpe;
  if (o.tokenizer == "bpe") {
    bpe = BpeTokenizer::load(o.tokenizer_path);
    sink.bpe = &bpe;
  }
  MT_CHECK(!files.empty(), ErrorKind::Config, "data: no input files");
  if (o.format == "fasta") {
    MT_CHECK(static_cast<int64_t>(files.size()) == o.num_classes, ErrorKind::Config, "data.class_files: ", files.size(),
             " FASTA files for ", o.num_classes, " classes (model.num_classes): give one file per class");
    for (size_t k = 0; k < files.size(); ++k) read_fasta(files[k], static_cast<int64_t>(k), sink);
  } else {
    MT_CHECK(files.size() == 1, ErrorKind::Config, "data.path: one ", o.format, " file expected");
    if (o.format == "tsv")
      read_tsv(files[0], sink);
    else if (o.format == "csv")
      read_csv(files[0], sink);
    else if (o.format == "jsonl")
      read_jsonl(files[0], sink);
    else
      throw Error(ErrorKind::Config, str("data.format: unknown format '", o.format, "'"));
  }
  std::string names;
  for (const auto& f : files) names += (names.empty() ? "" : ", ") + f;
  MT_CHECK(!sink.out.empty(), ErrorKind::Data, names, ": no usable rows (", st->skipped, " skipped",
           st->skipped_examples.empty() ? std::string() : "; first: " + st->skipped_examples[0], ")");
  return std::move(sink.out);
}

namespace {

// Every class must have training examples: a class file with no usable record, or a label that no row carries,
// would otherwise train a classifier that can never predict that class (and the run exits 0). `all` counts the rows
// read per class before the validation split took its share.
void check_every_class_trained(const LabelledOptions& o, const std::vector<int64_t>& all,
                               const std::vector<int64_t>& train) {
  for (size_t k = 0; k < train.size(); ++k) {
    if (train[k] > 0) continue;
    const bool fasta = o.format == "fasta";
    const std::string file = fasta ? o.files[k] : o.files[0];
    std::string why;
    if (all[k] > 0)
      why = str(all[k] == 1 ? "its only example" : str("its ", all[k], " examples"), " in '", file, "' ",
                all[k] == 1 ? "went" : "all went", " to the validation split (data.val_fraction ", o.val_fraction,
                "): add examples or give data.val_path");
    else if (fasta)
      why = str("'", file, "' (data.class_files[", k, "]) has no usable record");
    else
      why = str("no row of '", file, "' has label ", k, " (model.num_classes ", o.num_classes, ": labels 0 .. ",
                o.num_classes - 1, ")");
    throw Error(ErrorKind::Data, str("class ", k, " has no training examples: ", why));
  }
}

}  // namespace

LabelledDataset::LabelledDataset(const LabelledOptions& o) : o_(o) {
  vocab_ = o.tokenizer == "dna"   ? kDnaVocab
           : o.tokenizer == "bpe" ? BpeTokenizer::load(o.tokenizer_path).vocab_size()
                                  : 256;
  std::vector<Example> rows = read_labelled(o, o.files, &stats_);
  std::vector<int64_t> per_class(static_cast<size_t>(o.num_classes), 0);
  for (const Example& e : rows) ++per_class[static_cast<size_t>(e.label)];
  if (!o.val_path.empty()) {
    train_ = std::move(rows);
    val_ = read_labelled(o, {o.val_path}, &stats_);
  } else {
    MT_CHECK(o.val_fraction > 0 && o.val_fraction < 1, ErrorKind::Config,
             "data.val_fraction must be in (0, 1) without data.val_path, got ", o.val_fraction);
    const int64_t n = static_cast<int64_t>(rows.size());
    const int64_t n_val = static_cast<int64_t>(static_cast<double>(n) * o.val_fraction);
    MT_CHECK(n_val >= 1 && n - n_val >= 1, ErrorKind::Data, "data: ", n, " rows are too few to hold out a fraction ",
             o.val_fraction, " for validation");
    const std::vector<int64_t> perm = permutation(n, o.split_seed, kSplitDomain, 0);
    for (int64_t i = 0; i < n; ++i)
      (i >= n - n_val ? val_ : train_).push_back(std::move(rows[static_cast<size_t>(perm[static_cast<size_t>(i)])]));
  }
  check_every_class_trained(o, per_class, class_counts());
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto* part : {&train_, &val_}) {
    for (const Example& e : *part) {
      h = fnv_add(h, e.ids.data(), e.ids.size() * sizeof(int32_t));
      h = fnv_add(h, &e.label, sizeof e.label);
    }
  }
  hash_ = h;
}

int64_t LabelledDataset::vocab_size() const { return vocab_; }

std::vector<int64_t> LabelledDataset::class_counts() const {
  std::vector<int64_t> c(static_cast<size_t>(o_.num_classes), 0);
  for (const Example& e : train_) ++c[static_cast<size_t>(e.label)];
  return c;
}

std::string LabelledDataset::fingerprint() const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_));
  return str("labelled:", o_.format, ":", o_.tokenizer, ":train=", train_.size(), ":val=", val_.size(),
             ":fnv1a64:", hex);
}

Batch LabelledDataset::make_batch(const std::vector<const Example*>& rows, int64_t batch_size,
                                  const std::vector<bool>& rc) const {
  int64_t L = 1;
  for (const Example* e : rows) L = std::max<int64_t>(L, static_cast<int64_t>(e->ids.size()));
  Batch b;
  b.ids = Tensor::zeros({batch_size, L}, DType::I64);
  b.mask = Tensor::zeros({batch_size, L}, DType::F32);
  b.labels = Tensor::full({batch_size}, static_cast<double>(kIgnoreIndex), DType::I64);
  b.targets = Tensor::full({batch_size, L}, static_cast<double>(kIgnoreIndex), DType::I64);  // no LM targets
  int64_t* ids = b.ids.data<int64_t>();
  float* m = b.mask.data<float>();
  int64_t* lab = b.labels.data<int64_t>();
  std::vector<int32_t> tmp;
  for (size_t r = 0; r < rows.size(); ++r) {
    tmp = rows[r]->ids;
    if (!rc.empty() && rc[r]) reverse_complement(tmp.data(), static_cast<int64_t>(tmp.size()));
    for (size_t t = 0; t < tmp.size(); ++t) {
      ids[static_cast<int64_t>(r) * L + static_cast<int64_t>(t)] = tmp[t];
      m[static_cast<int64_t>(r) * L + static_cast<int64_t>(t)] = 1.0f;
    }
    lab[r] = rows[r]->label;
    b.tokens += static_cast<int64_t>(tmp.size());
  }
  return b;
}

Batch LabelledDataset::train_batch(uint64_t seed, int64_t first, int64_t batch_size) const {
  const int64_t n = num_train();
  std::vector<const Example*> rows;
  std::vector<bool> rc;
  int64_t cached_epoch = -1;
  std::vector<int64_t> perm;
  for (int64_t i = first; i < first + batch_size; ++i) {
    const int64_t e = i / n;
    if (e != cached_epoch) {
      perm = permutation(n, seed, kEpochDomain, static_cast<uint64_t>(e));
      cached_epoch = e;
    }
    rows.push_back(&train_[static_cast<size_t>(perm[static_cast<size_t>(i % n)])]);
    if (o_.rc_augment) rc.push_back(SampleRng(seed, kRcDomain, static_cast<uint64_t>(i)).below(2) == 1);
  }
  return make_batch(rows, batch_size, rc);
}

Batch LabelledDataset::val_batch(int64_t index, int64_t batch_size) const {
  const int64_t nb = num_val_batches(batch_size);
  MT_CHECK(index >= 0 && index < nb, ErrorKind::Internal, "LabelledDataset::val_batch: batch ", index,
           " out of range [0, ", nb, ")");
  std::vector<const Example*> rows;
  for (int64_t i = index * batch_size; i < std::min(num_val(), (index + 1) * batch_size); ++i)
    rows.push_back(&val_[static_cast<size_t>(i)]);
  return make_batch(rows, batch_size, {});
}

}  // namespace mt::data
