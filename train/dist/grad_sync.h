// Gradient all-reduce for data parallelism (issue 7): buckets of parameters reduced as their gradients become final
// during the last micro-batch's backward, so communication overlaps the rest of backward.
//
// Buckets: parameters in reverse registration order (backward finalises the last layers first), packed into buckets
// of at least distributed.bucket_mb (a parameter is never split; the last bucket takes the rest). Bucket b is
// launched once all its parameters' grad-ready hooks fired AND buckets 0..b-1 were launched, so every rank launches
// the same collectives in the same order. finish() launches what never fired (a parameter unused in the last
// micro-batch: its gradient, zeros if it has none, is reduced all the same) and waits for all of them.
//
// The sum, not the mean: the trainer weights each micro-batch's loss by its share of the scored tokens of the whole
// global batch, so the summed gradient is exactly the mean-loss gradient of the global batch (train/trainer.h).
//
// Backends:
//   tcp  - over the ControlPlane (rank-order sum, bit-reproducible). CPU tensors are reduced on a communication thread
//          while backward continues; CUDA tensors are staged through the host in finish() (no overlap: a fallback
//          that lets several ranks share one GPU, e.g. in tests).
//   nccl - ncclAllReduce on a communication stream that waits on an event recorded after the bucket was packed; the
//          compute stream waits on the bucket's completion event before unpacking. finish() is the watchdog: it polls
//          the events and ncclCommGetAsyncError until distributed.timeout_s, then aborts the communicator and throws
//          mt::Error(Distributed) naming the rank, the bucket and the operation (docs/DESIGN.md F8).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/dist/rendezvous.h"

namespace mt::train {

// Indices into `numels` (registration order) per bucket, the first bucket holding the last parameters.
std::vector<std::vector<size_t>> plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_bytes);

class GradBackend {
 public:
  virtual ~GradBackend() = default;
  virtual std::string name() const = 0;
  // Starts summing bucket b (its gradients: defined, f32, contiguous, all on one device) over the ranks, in place.
  virtual void launch(int b, const std::vector<Tensor>& grads) = 0;
  // Returns when every launched bucket's gradients hold the sum; throws mt::Error(Distributed) on failure.
  virtual void wait_all() = 0;
};

// backend "tcp" or "nccl" ("nccl" needs a CUDA build with NCCL and CUDA parameters). cp must outlive the backend.
std::unique_ptr<GradBackend> make_grad_backend(const std::string& backend, ControlPlane& cp, Device dev,
                                               int64_t total_numel);
// What distributed.backend "auto" means on this device and build: "nccl" on CUDA with NCCL, else "tcp".
std::string default_grad_backend(Device dev);

class GradSync {
 public:
  // Registers grad-ready hooks on every parameter (they do nothing until arm()).
  GradSync(const std::vector<Tensor*>& params, std::unique_ptr<GradBackend> backend, int64_t bucket_bytes);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // The next backward launches buckets as they fill. carried (empty, or one per parameter, undefined where none):
  // the gradients of this rank's earlier micro-batches, added in front of the last one's (carried + last) as each
  // bucket launches, so that the rank's sum is formed in the same order as one process accumulating them.
  void arm(std::vector<Tensor> carried = {});
  void finish();  // launches the rest, waits; every parameter's gradient then holds the sum over the ranks

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  int launched_during_backward() const { return launched_early_; }  // of the last step (overlap actually achieved)
  std::string backend_name() const { return backend_->name(); }

 private:
  void on_ready(size_t param);
  void launch_ready_prefix();
  void launch(size_t b);
  std::vector<Tensor*> params_;
  std::unique_ptr<GradBackend> backend_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_;  // param -> bucket
  std::vector<int> pending_;       // per bucket: params not ready yet
  std::vector<char> ready_;        // per param
  std::vector<Tensor> carried_;
  size_t next_ = 0;  // next bucket to launch
  bool armed_ = false;
  int launched_early_ = 0;
  std::shared_ptr<GradSync*> alive_;  // the hooks hold it weakly: they do nothing once this object is gone
};

}  // namespace mt::train
