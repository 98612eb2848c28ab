#include "data/labelled.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <numeric>

#include "core/error.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "data/row_stream.h"
#include "data/sample_rng.h"
#include "data/text_dataset.h"

namespace mt::data {

namespace {

constexpr uint64_t kSplitDomain = 0x73706c6974303031ULL;  // "split001"
constexpr uint64_t kEpochDomain = 0x65706f6368303031ULL;  // "epoch001"
constexpr uint64_t kRcDomain = 0x7263617567303031ULL;     // "rcaug001"

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

// An integer class index written in decimal ("3", "-1"); false for anything else.
bool parse_integer(const std::string& text, int64_t* v) {
  const char* b = text.data();
  const char* e = b + text.size();
  auto r = std::from_chars(b, e, *v);
  return !text.empty() && r.ec == std::errc() && r.ptr == e;
}

// A usable class name: non-empty UTF-8 text without control characters.
bool valid_name(const std::string& name) {
  if (name.empty() || first_invalid_utf8(name) >= 0) return false;
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

std::string name_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 20; ++i) s += (i ? ", " : "") + printable(names[i]);
  if (names.size() > 20) s += str(", ... (", names.size(), " in all)");
  return s;
}

std::string not_an_index(const std::string& label) {
  return str("label '", printable(label), "' is not an integer class index");
}

// Collects rows, applying the bad-row policy and the label rules of data/labelled.h.
struct Sink {
  Sink(const LabelledOptions& opts, ReadStats* stats) : o(opts), st(stats) {}
  const LabelledOptions& o;
  ReadStats* st;
  std::vector<Example> out;
  enum class Labels { Undecided, Integers, Names } labels = Labels::Undecided;
  std::vector<std::string> names;     // Names without o.label_names: each kept example's name, in order
  const BpeTokenizer* bpe = nullptr;  // tokenizer bpe

  void bad(const std::string& where, const std::string& problem) {
    const std::string msg = where + ": " + problem;
    MT_CHECK(o.bad_rows == "skip", ErrorKind::Data, msg, " (data.bad_rows: skip would skip and count such rows)");
    ++st->skipped;
    if (st->skipped_examples.size() < 5) st->skipped_examples.push_back(msg);
  }

  // The class of a tsv / csv / jsonl label (-1 for a name numbered at the end); "" or the problem.
  std::string label_of(const std::string& text, int64_t* label) {
    if (!o.label_names.empty() || o.integer_labels || labels == Labels::Integers) {
      std::string problem;
      *label = class_index(text, o.label_names, o.num_classes, &problem);
      return problem;
    }
    int64_t v = -1;
    const bool integer = parse_integer(text, &v);
    if (labels == Labels::Undecided) {
      if (!integer && !valid_name(text))
        return not_an_index(text) + " or a class name (names are UTF-8 text without control characters)";
      labels = integer ? Labels::Integers : Labels::Names;
      if (integer) return label_of(text, label);
    }
    if (integer)
      return str("label '", text,
                 "' is an integer but the labels are class names (the first row's is one); list every class in "
                 "data.label_names to use it as a name");
    if (!valid_name(text))
      return str("label '", printable(text), "' is not a class name (names are UTF-8 text without control characters)");
    *label = -1;
    return "";
  }

  // label_text: the label column's text, or "" with `label` >= 0 given (FASTA: the file's class).
  void add(const std::string& where, const std::string& text, const std::string& label_text, int64_t label) {
    if (text.empty()) return bad(where, "empty text");
    if (label < 0) {
      const std::string problem = label_of(label_text, &label);
      if (!problem.empty()) return bad(where, problem);
    } else if (label >= o.num_classes) {
      return bad(where, str("label ", label, " is outside [0, ", o.num_classes, ") (model.num_classes)"));
    }
    Example ex;
    ex.label = label;
    bool truncated = false;
    const std::string problem = encode_row_text(text, o.tokenizer, o.max_len, ex.ids, &truncated, bpe);
    if (!problem.empty()) return bad(where, problem);
    st->truncated += truncated;
    ++st->rows;
    if (label < 0) names.push_back(label_text);
    out.push_back(std::move(ex));
  }

  // Names found in the file (no o.label_names): number them in sorted order; returns the classes.
  std::vector<std::string> number_names(const std::string& files) {
    std::vector<std::string> classes = names;
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    MT_CHECK(static_cast<int64_t>(classes.size()) == o.num_classes, ErrorKind::Config, "model.num_classes is ",
             o.num_classes, " but the labels of ", files, " name ", classes.size(), " class(es): ", name_list(classes),
             " (set model.num_classes, or list every class in data.label_names)");
    size_t k = 0;
    for (Example& e : out) {
      if (e.label >= 0) continue;
      e.label = std::lower_bound(classes.begin(), classes.end(), names[k++]) - classes.begin();
    }
    return classes;
  }
};

void read_file_rows(const std::string& path, Sink& sink, int64_t fasta_class) {
  RowSpec spec;
  spec.format = sink.o.format;
  spec.text_column = sink.o.text_column;
  spec.label_column = sink.o.label_column;
  spec.labels = fasta_class < 0;
  stream_rows(path, spec, [&](Row& r) {
    const std::string where = str(path, ":", r.line);
    if (!r.problem.empty()) return sink.bad(where, r.problem);
    sink.add(where, r.text, r.label, fasta_class);
  });
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

std::vector<Example> read_labelled(const LabelledOptions& o, const std::vector<std::string>& files, ReadStats* stats,
                                   std::vector<std::string>* label_names) {
  ReadStats local;
  ReadStats* st = stats ? stats : &local;
  Sink sink(o, st);
  BpeTokenizer bpe;
  if (o.tokenizer == "bpe") {
    bpe = BpeTokenizer::load(o.tokenizer_path);
    sink.bpe = &bpe;
  }
  MT_CHECK(!files.empty(), ErrorKind::Config, "data: no input files");
  MT_CHECK(o.label_names.empty() || static_cast<int64_t>(o.label_names.size()) == o.num_classes, ErrorKind::Config,
           "data.label_names: ", o.label_names.size(), " names for ", o.num_classes, " classes (model.num_classes)");
  if (o.format == "fasta") {
    MT_CHECK(static_cast<int64_t>(files.size()) == o.num_classes, ErrorKind::Config, "data.class_files: ", files.size(),
             " FASTA files for ", o.num_classes, " classes (model.num_classes): give one file per class");
    for (size_t k = 0; k < files.size(); ++k) read_file_rows(files[k], sink, static_cast<int64_t>(k));
  } else {
    MT_CHECK(files.size() == 1, ErrorKind::Config, "data.path: one ", o.format, " file expected");
    MT_CHECK(o.format == "tsv" || o.format == "csv" || o.format == "jsonl", ErrorKind::Config,
             "data.format: unknown format '", o.format, "'");
    read_file_rows(files[0], sink, -1);
  }
  std::string names;
  for (const auto& f : files) names += (names.empty() ? "" : ", ") + f;
  MT_CHECK(!sink.out.empty(), ErrorKind::Data, names, ": no usable rows (", st->skipped, " skipped",
           st->skipped_examples.empty() ? std::string() : "; first: " + st->skipped_examples[0], ")");
  std::vector<std::string> classes = o.label_names;
  if (sink.labels == Sink::Labels::Names && o.label_names.empty()) classes = sink.number_names(names);
  if (label_names) *label_names = classes;
  return std::move(sink.out);
}

int64_t class_index(const std::string& label, const std::vector<std::string>& names, int64_t num_classes,
                    std::string* problem) {
  if (!names.empty()) {
    auto it = std::find(names.begin(), names.end(), label);
    if (it != names.end()) return it - names.begin();
    *problem = str("label '", printable(label), "' is not one of the class names (", name_list(names), ")");
    return -1;
  }
  int64_t v = -1;
  if (!parse_integer(label, &v)) {
    *problem = not_an_index(label);
    return -1;
  }
  if (v < 0 || v >= num_classes) {
    *problem = str("label ", v, " is outside [0, ", num_classes, ") (model.num_classes)");
    return -1;
  }
  return v;
}

std::string encode_row_text(const std::string& text, const std::string& tokenizer, int64_t max_len,
                            std::vector<int32_t>& ids, bool* truncated, const BpeTokenizer* bpe) {
  ids.clear();
  if (text.empty()) return "empty text";
  if (tokenizer == "bpe") {
    MT_CHECK(bpe != nullptr, ErrorKind::Internal, "encode_row_text: tokenizer bpe without a BpeTokenizer");
    try {
      ids = bpe->encode(text);
    } catch (const Error& e) {
      return e.what();  // invalid UTF-8, named by its byte offset
    }
    if (ids.empty()) return "the text encodes to no token";
  } else if (tokenizer == "dna") {
    const int64_t at = encode_dna(text, ids);
    if (at >= 0) {
      const char c = text[static_cast<size_t>(at)];
      return str("'", printable(std::string(1, c)), "' at offset ", at,
                 " is not a DNA letter (A C G T, N or an IUPAC ambiguity code)");
    }
  } else {
    // Text files are UTF-8: a broken sequence means a corrupt or mis-encoded file (Latin-1, UTF-16), which the
    // byte tokenizer would otherwise learn silently.
    const int64_t bad_at = first_invalid_utf8(text);
    if (bad_at >= 0)
      return str("invalid UTF-8 at byte ", bad_at, " of the text (byte 0x", std::hex,
                 static_cast<int>(static_cast<unsigned char>(text[static_cast<size_t>(bad_at)])), std::dec,
                 "; the file must be UTF-8)");
    ids.assign(text.begin(), text.end());
    for (int32_t& t : ids) t &= 0xff;
  }
  *truncated = static_cast<int64_t>(ids.size()) > max_len;
  if (*truncated) ids.resize(static_cast<size_t>(max_len));
  return "";
}

namespace {

// Every class must have training examples: a class file with no usable record, or a label that no row carries,
// would otherwise train a classifier that can never predict that class (and the run exits 0). `all` counts the rows
// read per class before the validation split took its share.
void check_every_class_trained(const LabelledOptions& o, const std::vector<std::string>& names,
                               const std::vector<int64_t>& all, const std::vector<int64_t>& train) {
  for (size_t k = 0; k < train.size(); ++k) {
    if (train[k] > 0) continue;
    const bool fasta = o.format == "fasta";
    const std::string file = fasta ? o.files[k] : o.files[0];
    std::string why;
    if (all[k] > 0)
      why = str(all[k] == 1 ? "its only example" : str("its ", all[k], " examples"), " in '", file, "' ",
                all[k] == 1 ? "went" : "all went",
                o.test_fraction > 0 ? " to the held-out splits" : " to the validation split", " (data.val_fraction ",
                o.val_fraction, o.test_fraction > 0 ? str(", data.test_fraction ", o.test_fraction) : std::string(),
                "): add examples or give data.val_path");
    else if (fasta)
      why = str("'", file, "' (data.class_files[", k, "]) has no usable record");
    else if (!names.empty())
      why = str("no row of '", file, "' has label '", printable(names[k]), "' (data.label_names[", k, "])");
    else
      why = str("no row of '", file, "' has label ", k, " (model.num_classes ", o.num_classes, ": labels 0 .. ",
                o.num_classes - 1, ")");
    const std::string cls = names.empty() ? str(k) : str(k, " ('", printable(names[k]), "')");
    throw Error(ErrorKind::Data, str("class ", cls, " has no training examples: ", why));
  }
}

}  // namespace

LabelledDataset::LabelledDataset(const LabelledOptions& o) : o_(o) {
  vocab_ = o.tokenizer == "dna"   ? kDnaVocab
           : o.tokenizer == "bpe" ? BpeTokenizer::load(o.tokenizer_path).vocab_size()
                                  : 256;
  std::vector<Example> rows = read_labelled(o, o.files, &stats_, &label_names_);
  std::vector<int64_t> per_class(static_cast<size_t>(o.num_classes), 0);
  for (const Example& e : rows) ++per_class[static_cast<size_t>(e.label)];
  if (!o.val_path.empty()) {
    train_ = std::move(rows);
    LabelledOptions vo = o;  // the validation labels take the training file's classes
    vo.label_names = label_names_;
    vo.integer_labels = label_names_.empty();
    val_ = read_labelled(vo, {o.val_path}, &stats_);
  } else {
    MT_CHECK(o.val_fraction > 0 && o.val_fraction < 1, ErrorKind::Config,
             "data.val_fraction must be in (0, 1) without data.val_path, got ", o.val_fraction);
    MT_CHECK(o.test_fraction >= 0 && o.val_fraction + o.test_fraction < 1, ErrorKind::Config,
             "data.val_fraction + data.test_fraction must be < 1, got ", o.val_fraction, " + ", o.test_fraction);
    const int64_t n = static_cast<int64_t>(rows.size());
    const int64_t n_val = static_cast<int64_t>(static_cast<double>(n) * o.val_fraction);
    const int64_t n_test = static_cast<int64_t>(static_cast<double>(n) * o.test_fraction);
    MT_CHECK(n_val >= 1 && n - n_val - n_test >= 1, ErrorKind::Data, "data: ", n,
             " rows are too few to hold out a fraction ", o.val_fraction, " for validation",
             o.test_fraction > 0 ? str(" and ", o.test_fraction, " for test") : std::string());
    MT_CHECK(o.test_fraction == 0 || n_test >= 1, ErrorKind::Data, "data: ", n,
             " rows are too few to hold out a fraction ", o.test_fraction, " for test (data.test_fraction)");
    // The permutation's tail: test, then validation before it; the rest trains.
    const std::vector<int64_t> perm = permutation(n, o.split_seed, kSplitDomain, 0);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<Example>& part = i >= n - n_test ? test_ : i >= n - n_test - n_val ? val_ : train_;
      part.push_back(std::move(rows[static_cast<size_t>(perm[static_cast<size_t>(i)])]));
    }
  }
  check_every_class_trained(o, label_names_, per_class, class_counts());
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto* part : {&train_, &val_, &test_}) {
    for (const Example& e : *part) {
      h = fnv_add(h, e.ids.data(), e.ids.size() * sizeof(int32_t));
      h = fnv_add(h, &e.label, sizeof e.label);
    }
  }
  hash_ = h;
}

int64_t LabelledDataset::vocab_size() const { return vocab_; }

const std::vector<Example>& LabelledDataset::split(const std::string& name) const {
  MT_CHECK(name == "val" || name == "test", ErrorKind::Usage, "labelled data: no split '", name, "' (val or test)");
  return name == "val" ? val_ : test_;
}

std::vector<int64_t> LabelledDataset::class_counts() const {
  std::vector<int64_t> c(static_cast<size_t>(o_.num_classes), 0);
  for (const Example& e : train_) ++c[static_cast<size_t>(e.label)];
  return c;
}

std::string LabelledDataset::fingerprint() const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_));
  // The test split appears only when there is one, so runs without it keep their fingerprint.
  return str("labelled:", o_.format, ":", o_.tokenizer, ":train=", train_.size(), ":val=", val_.size(),
             test_.empty() ? std::string() : str(":test=", test_.size()), ":fnv1a64:", hex);
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
