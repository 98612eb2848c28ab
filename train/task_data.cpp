#include "train/task_data.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "data/dna.h"
#include "data/labelled.h"
#include "data/mlm.h"
#include "data/selective_copying.h"
#include "data/text_dataset.h"

namespace mt::train {

namespace {

// Forwards the batch interface to a data/ class DS; subclasses add the description.
template <typename DS>
class Forwarding : public TaskData {
 public:
  template <typename... Args>
  explicit Forwarding(Args&&... args) : ds_(std::forward<Args>(args)...) {}
  data::Batch train_batch(uint64_t seed, int64_t first, int64_t b) const override {
    return ds_.train_batch(seed, first, b);
  }
  data::Batch val_batch(int64_t i, int64_t b) const override { return ds_.val_batch(i, b); }
  int64_t num_val_batches(int64_t b) const override { return ds_.num_val_batches(b); }
  std::string fingerprint() const override { return ds_.fingerprint(); }

 protected:
  DS ds_;
};

class TextTask : public Forwarding<data::TextDataset> {
 public:
  TextTask(const DataSection& d, const TokenizerSection& t)
      : Forwarding(d.path, d.val_fraction, d.seq_len, t.kind, t.path), tokenizer_(t.kind) {}
  std::string describe() const override {
    return str("text ", ds_.path(), " (", tokenizer_, " tokens; ", ds_.train_size(), " train / ", ds_.val_size(),
               " held-out tokens; ", ds_.num_val_windows(), " validation windows of ", ds_.seq_len(), ")");
  }
  int64_t vocab_size() const { return ds_.vocab_size(); }
  int64_t eod_id() const override { return ds_.eod_id(); }
  int64_t epoch_samples() const override { return std::max<int64_t>(1, ds_.train_size() / ds_.seq_len()); }

 private:
  std::string tokenizer_;
};

class CopyTask : public Forwarding<data::SelectiveCopying> {
 public:
  explicit CopyTask(const DataSection& d)
      : Forwarding(d.seq_len, d.copy_tokens, d.copy_vocab, d.val_samples), val_(d.val_samples) {}
  std::string describe() const override {
    return str("selective copying (seq_len ", ds_.seq_len(), ", ", ds_.copy_tokens(),
               " tokens to copy from a vocabulary of ", ds_.copy_vocab(), "; ", val_, " validation sequences)");
  }
  bool reports_accuracy() const override { return true; }

 private:
  int64_t val_;
};

// Masked language modelling over an LM data source: the same windows, BERT-masked per sample (data/mlm.h).
class MlmTask : public TaskData {
 public:
  MlmTask(std::unique_ptr<TaskData> inner, const data::MlmMasking& m, uint64_t val_seed)
      : inner_(std::move(inner)), m_(m), val_seed_(val_seed) {}
  data::Batch train_batch(uint64_t seed, int64_t first, int64_t b) const override {
    data::Batch x = inner_->train_batch(seed, first, b);
    data::apply_mlm_masking(x, m_, seed, kTrainDomain, first);
    return x;
  }
  data::Batch val_batch(int64_t i, int64_t b) const override {
    data::Batch x = inner_->val_batch(i, b);
    data::apply_mlm_masking(x, m_, val_seed_, kValDomain, i * b);
    return x;
  }
  int64_t num_val_batches(int64_t b) const override { return inner_->num_val_batches(b); }
  std::string fingerprint() const override { return str(inner_->fingerprint(), ";mlm:", m_.probability); }
  std::string describe() const override {
    return str(inner_->describe(), "; masked LM: ", m_.probability, " of the positions, mask id ", m_.mask_id);
  }
  bool masked_lm() const override { return true; }
  int64_t eod_id() const override { return inner_->eod_id(); }  // never masked (MlmMasking::keep)

 private:
  static constexpr uint64_t kTrainDomain = 0x6d6c6d2d747261ULL, kValDomain = 0x6d6c6d2d76616cULL;
  std::unique_ptr<TaskData> inner_;
  data::MlmMasking m_;
  uint64_t val_seed_;
};

class ClassificationTask : public Forwarding<data::LabelledDataset> {
 public:
  explicit ClassificationTask(const TrainConfig& c) : Forwarding(labelled_options(c)) {}
  std::string describe() const override {
    const data::ReadStats& st = ds_.stats();
    std::string counts;
    for (int64_t n : ds_.class_counts()) counts += (counts.empty() ? "" : " / ") + std::to_string(n);
    std::string s = str("labelled sequences: ", ds_.num_train(), " train (classes ", counts, ") / ", ds_.num_val(),
                        " validation", ds_.num_test() > 0 ? str(" / ", ds_.num_test(), " test (held out)") : "", "; ",
                        st.skipped, " bad rows skipped, ", st.truncated, " truncated");
    for (const std::string& e : st.skipped_examples) s += "\n  skipped: " + e;
    return s;
  }
  bool classification() const override { return true; }
  std::vector<std::string> label_names() const override { return ds_.label_names(); }
  int64_t epoch_samples() const override { return ds_.num_train(); }
};

}  // namespace

data::LabelledOptions labelled_options(const TrainConfig& c) {
  data::LabelledOptions o;
  o.format = c.data.format;
  if (o.format == "fasta") {
    o.files = class_file_list(c.data);
  } else {
    o.files = {c.data.path};
  }
  o.val_path = c.data.val_path;
  o.text_column = c.data.text_column;
  o.label_column = c.data.label_column;
  o.tokenizer = c.tokenizer.kind;
  o.tokenizer_path = c.tokenizer.path;
  o.num_classes = c.model.num_classes;
  o.max_len = c.data.seq_len;
  o.val_fraction = c.data.val_fraction;
  o.test_fraction = c.data.test_fraction;
  o.split_seed = c.data.split_seed >= 0 ? static_cast<uint64_t>(c.data.split_seed) : c.run.seed;
  o.bad_rows = c.data.bad_rows;
  o.rc_augment = c.data.rc_augment;
  o.label_names = c.data.label_names;
  return o;
}

std::unique_ptr<TaskData> make_task_data(const TrainConfig& cfg) {
  if (cfg.data.kind == "classification") return std::make_unique<ClassificationTask>(cfg);
  MT_CHECK(cfg.model.head == "lm", ErrorKind::Config, "model.head: data.kind ", cfg.data.kind,
           " feeds the language-model head only (lm); classification heads need data.kind classification, got ",
           cfg.model.head);
  if (cfg.data.kind == "text") {
    auto t = std::make_unique<TextTask>(cfg.data, cfg.tokenizer);
    const bool mlm = cfg.trainer.objective == "mlm";
    // A token shard carries its own vocabulary; the embedding must hold every id in it (and the mask token).
    const int64_t needed = t->vocab_size() + (mlm ? 1 : 0);
    MT_CHECK(needed <= cfg.model.mamba.vocab_size, ErrorKind::Config, "model.vocab_size: ", cfg.model.mamba.vocab_size,
             " is smaller than the vocabulary of data.path '", cfg.data.path, "' (", t->vocab_size(), " ids",
             mlm ? " and the mask token" : "", ")");
    if (!mlm) return t;
    data::MlmMasking m;
    m.probability = cfg.trainer.mlm_probability;
    m.mask_id = t->vocab_size();  // a new id after the tokenizer's
    if (cfg.tokenizer.kind == "dna") {
      m.random_lo = data::kDnaA;  // A C G T N
      m.random_hi = data::kDnaN + 1;
      m.keep = {data::kDnaPad, data::kDnaEod};
    } else {
      m.random_lo = 0;
      m.random_hi = t->vocab_size();
      if (t->eod_id() >= 0) m.keep = {t->eod_id()};
    }
    return std::make_unique<MlmTask>(std::move(t), m, cfg.run.seed);
  }
  if (cfg.data.kind == "selective_copying") return std::make_unique<CopyTask>(cfg.data);
  throw Error(ErrorKind::Config, str("data.kind: unknown kind '", cfg.data.kind, "'"));
}

int64_t scored_targets(const data::Batch& b) {
  const Tensor t = b.targets.contiguous();
  const int64_t B = t.size(0), L = t.size(1);
  const int64_t* p = t.data<int64_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t j = 1; j < L; ++j) n += p[i * L + j] != data::kIgnoreIndex;
  return n;
}

int64_t scored_masked_targets(const data::Batch& b) {
  const std::vector<int64_t> t = b.targets.to_vector_i64();
  return static_cast<int64_t>(t.size() - std::count(t.begin(), t.end(), data::kIgnoreIndex));
}

std::vector<MicroBatchSlice> rank_micro_batches(int64_t samples_seen, int64_t global_batch, int64_t micro, int rank,
                                                int world) {
  MT_CHECK(world >= 1 && rank >= 0 && rank < world, ErrorKind::Config, "rank ", rank, " is not in [0, ", world, ")");
  MT_CHECK(micro >= 1 && global_batch >= 1 && global_batch % (micro * world) == 0, ErrorKind::Config,
           "trainer.global_batch_size (", global_batch, ") must be a multiple of trainer.micro_batch_size (", micro,
           ") x the number of ranks (", world, ")");
  const int64_t per_rank = global_batch / (micro * world);
  std::vector<MicroBatchSlice> out;
  for (int64_t a = 0; a < per_rank; ++a)
    out.push_back({samples_seen + (static_cast<int64_t>(rank) * per_rank + a) * micro, micro});
  return out;
}

}  // namespace mt::train
