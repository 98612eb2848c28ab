#include "train/task_data.h"

#include <utility>

#include "core/error.h"
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
  explicit TextTask(const DataSection& d) : Forwarding(d.path, d.val_fraction, d.seq_len) {}
  std::string describe() const override {
    return str("text ", ds_.path(), " (byte tokens; ", ds_.train_size(), " train / ", ds_.val_size(),
               " held-out bytes; ", ds_.num_val_windows(), " validation windows of ", ds_.seq_len(), ")");
  }
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

}  // namespace

std::unique_ptr<TaskData> make_task_data(const TrainConfig& cfg) {
  MT_CHECK(cfg.model.head == "lm", ErrorKind::Config, "model.head: data.kind ", cfg.data.kind,
           " feeds the language-model head only (lm); classification heads need labelled data, which this build "
           "does not read yet; got ", cfg.model.head);
  if (cfg.data.kind == "text") return std::make_unique<TextTask>(cfg.data);
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

}  // namespace mt::train
