// The trainer's view of a data source: batches by global sample index, validation batches, a fingerprint for
// checkpoints, and the task's extra metric. Chooses the data/ class from the config's data.kind.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/labelled.h"
#include "train/config/config.h"

namespace mt::train {

class TaskData {
 public:
  virtual ~TaskData() = default;
  // Samples first .. first + batch_size - 1 of the training stream of `seed` (a pure function of its arguments).
  virtual data::Batch train_batch(uint64_t seed, int64_t first, int64_t batch_size) const = 0;
  virtual data::Batch val_batch(int64_t index, int64_t batch_size) const = 0;
  virtual int64_t num_val_batches(int64_t batch_size) const = 0;
  virtual std::string fingerprint() const = 0;
  virtual std::string describe() const = 0;  // one line for the console
  // True when evaluation reports the argmax accuracy on the scored positions (selective copying).
  virtual bool reports_accuracy() const { return false; }
  // True for labelled data (Batch::labels, token mask): the sequence-classification head and its metrics.
  virtual bool classification() const { return false; }
  // True for masked language modelling (trainer.objective mlm, data/mlm.h): targets[:, t] is the token at t (no
  // shift) where scored; evaluation reports the masked loss and accuracy.
  virtual bool masked_lm() const { return false; }
  // The end-of-document token of language-model data (data.reset_at_document_end), or -1 when it has none.
  virtual int64_t eod_id() const { return -1; }
  // Classification: the class names in class order when the labels are names (data/labelled.h), else empty.
  virtual std::vector<std::string> label_names() const { return {}; }
  // Training samples per epoch (trainer.epochs): the training rows of labelled data; for text, the windows of seq_len
  // tokens that the training split holds (floor(training tokens / seq_len), at least 1); 0 for a source without an
  // end (selective copying).
  virtual int64_t epoch_samples() const { return 0; }
};

// From cfg.data (text and selective_copying feed the LM head, classification the sequence-classification head).
// mt::Error(Config / Data) on problems.
std::unique_ptr<TaskData> make_task_data(const TrainConfig& cfg);

// The labelled-data options of a classification config (data.*, tokenizer.*, the split seed): the splits training
// used, for `evaluate --split`.
data::LabelledOptions labelled_options(const TrainConfig& cfg);

// Data parallelism: which training samples each rank reads. An optimizer step consumes the global batch
// [samples_seen, samples_seen + global_batch) as global_batch / micro micro-batches of `micro` consecutive samples;
// with `world` ranks, rank r takes the r-th contiguous run of global_batch / (micro * world) of them. Because batches
// are a pure function of (seed, sample index), the ranks together read exactly the micro-batches one process would, and
// a resume at any step needs only samples_seen. mt::Error(Config) naming trainer.global_batch_size when it is not a
// multiple of micro * world, or when rank is not in [0, world).
struct MicroBatchSlice {
  int64_t first = 0;  // global index of its first sample
  int64_t count = 0;  // samples (== micro)
};
std::vector<MicroBatchSlice> rank_micro_batches(int64_t samples_seen, int64_t global_batch, int64_t micro, int rank,
                                                int world);

// Target positions the next-token loss scores: targets[:, 1:] != -100 (data/batch.h convention).
int64_t scored_targets(const data::Batch& b);
// Target positions a masked-LM loss scores: targets != -100 anywhere.
int64_t scored_masked_targets(const data::Batch& b);

}  // namespace mt::train
