// The training loop behind `mamba-train train` and `mamba-train bench`.
//
// One optimizer step (train_step):
//   global_batch_size / micro_batch_size micro-batches, each: forward -> loss * w_a * scale -> backward (gradients
//   accumulate in the fp32 masters; w_a = scored tokens of micro-batch a / scored tokens of the step, so the
//   accumulated gradient is exactly that of the mean loss over the whole global batch) ->
//   every gradient checked for inf / NaN and the global norm formed (optim::grad_health, nothing touched yet) ->
//   the norm unscaled -> clip factor ->
//   fused AdamW with grad_scale = clip / scale -> dynamic loss scaler update.
//   A step whose loss or any gradient is inf/NaN is skipped: parameters, moments, the Adam step count and the LR
//   position (the LR follows the optimizer's step count) stay as they were, the data still advances, and after
//   trainer.max_nonfinite_steps consecutive skips the run stops with ErrorKind::NonFinite naming the step, the
//   first non-finite tensor and the last good checkpoint (docs/DESIGN.md "Reliability promises").
//
// State that makes a resume exact (all in the checkpoint, train/ckpt/checkpoint.h):
//   model/<HF name>, optim/exp_avg/<name>, optim/exp_avg_sq/<name>   tensors (f32)
//   step, samples_seen, optim/step, scaler/{good_steps,skipped_total,nonfinite_streak}, rng/{seed,offset}  ints
//   scaler/scale                                                      float
//   config_yaml (the resolved config), model_config_json, model_head, data_fingerprint   strings
//   log/window_loss_sum (float), log/window_steps (int): the logging window, so that logged losses match too
//   last_good_checkpoint (string, only when saved during a non-finite streak): the checkpoint from before it
//   best/state (with checkpoint.monitor: the ranking of train/best.h)   string
//   run/elapsed_s: wall-clock seconds of training processes so far (the only value that differs between a resumed
//   run and an uninterrupted one), mamba_train/version, mamba_train/commit   informative
// The data is a pure function of (run.seed, samples_seen) (data/batch.h), the LR a pure function of the optimizer
// step, so a run resumed from step N continues bit for bit as the uninterrupted one (CPU, fp32; tested).
//
// Run directory (run.out_dir; train/run_dir.h): run.lock, config.yaml (resolved; config.resume-<k>.yaml for each
// resume), starts.jsonl, metrics.jsonl, loss.svg, checkpoints/ (checkpoint.dir).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "train/config/config.h"
#include "train/dist/rendezvous.h"
#include "train/metrics.h"

namespace mt::train {

struct StepStats {
  double loss = 0;        // mean loss over the global batch (NaN / inf when skipped for that reason)
  double grad_norm = 0;   // unscaled global L2 norm before clipping (NaN when skipped)
  double lr = 0;          // LR applied (0 when skipped)
  double loss_scale = 1;  // scale used for this step
  bool skipped = false;
  std::string nonfinite;  // skipped: "loss" or the HF name of the first non-finite gradient
  int64_t tokens = 0;     // input tokens processed
};

// One evaluation on the validation data, with the metrics of `mamba-train evaluate` (train/metrics.h).
struct EvalStats {
  double loss = 0;       // mean cross-entropy (next tokens, or rows of a classifier); NaN without validation data
  double accuracy = -1;  // selective_copying: copied tokens right; classification: rows right; -1 otherwise
  bool classification = false;
  ClassificationReport report;  // classification
  LanguageModelReport lm;       // language models (lm.bytes < 0: the tokens are not text)
  int64_t n = 0;                // rows (classification) or scored target tokens
};

struct TrainerOptions {
  bool write_outputs = true;  // false (bench): no run directory, no files, no lock
  DistEnv env;                // this process's place in a data-parallel job (one process by default)
};

struct RunOptions {
  int64_t stop_at_step = 0;           // > 0: save a checkpoint after this step and stop (as a preemption would)
  bool accept_config_change = false;  // resume although the config changed in keys a resume may not change
};

struct RunResult {
  int64_t step = 0;             // steps done
  int exit_code = 0;            // 0, or 130 / 143 / 129 after SIGINT / SIGTERM / SIGHUP (checkpoint saved)
  std::string last_checkpoint;  // "" when none was written
  EvalStats final_eval;         // valid when the run reached its last step
  bool early_stopped = false;   // trainer.early_stop_patience ended the run (now or in an earlier process)
};

class Trainer {
 public:
  // Builds the model (initialised from run.seed, or model.init_from), the data, the optimizer, the schedule and
  // the loss scaler. With opt.write_outputs false (bench) it creates no files; otherwise rank 0 first locks the run
  // directory and checks it (train/run_dir.h): mt::Error(RunLocked) when another trainer holds it. With
  // opt.env.world_size > 1 it connects to the other ranks over the control plane once the model and data are built;
  // rank 0 alone writes the run directory.
  explicit Trainer(const TrainConfig& cfg, const TrainerOptions& opt = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Whole run: resume per checkpoint.resume (train/run_dir.h), train to trainer.max_steps (or trainer.epochs) with
  // evals, logs, checkpoints and the best checkpoints (train/best.h), SIGINT / SIGTERM / SIGHUP -> checkpoint and
  // exit code 130 / 143 / 129 (SIGHUP stays ignored under nohup).
  RunResult run(const RunOptions& opt = {});

  StepStats train_step();
  EvalStats evaluate();
  std::string save_checkpoint_now();          // returns the path
  void resume_from(const std::string& path);  // throws mt::Error(Checkpoint) naming what differs

  int64_t step() const;
  int64_t num_parameters() const;
  Device device() const;
  const TrainConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The compute dtype of trainer.precision ("fp32" -> F32, "bf16" -> BF16, "fp16" -> F16).
DType precision_dtype(const std::string& precision);

}  // namespace mt::train
