// Where a training step's time goes (`mamba-train bench --breakdown`). OpBreakdown is an OpTimer (core/op_timer.h)
// that sums the time of every op's kernel calls: on CUDA by events recorded on the stream around each call (the
// GPU time from the call's first kernel to its last), on the CPU by the wall clock. Tensor copies, casts and fills
// made outside the ops are timed too, under names that start "tensor_copy", "tensor_cast", "tensor_fill" and go on
// with their dtypes and shape. breakdown_table groups the ops into classes and adds the rest of the step (kernel
// launch gaps, host work) as one row, so the rows sum to the step time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/op_timer.h"

namespace mt::train {

class OpBreakdown : public OpTimer {
 public:
  explicit OpBreakdown(Device dev);  // installs itself (set_op_timer)
  ~OpBreakdown() override;           // uninstalls itself
  OpBreakdown(const OpBreakdown&) = delete;
  OpBreakdown& operator=(const OpBreakdown&) = delete;

  void begin(const char* op, bool cuda) override;
  void end(const char* op, bool cuda) override;
  // Milliseconds per op name since the last collect (call once the device has finished that work); with calls,
  // also adds the number of timed calls per op name to it.
  std::map<std::string, double> collect(std::map<std::string, int64_t>* calls = nullptr);

 private:
  struct Impl;
  Impl* impl_;
};

// The class an op name belongs to ("GEMMs", "selective scan", "causal conv1d", "norms", "LM head + loss",
// "optimizer", "tensor copies / dtype casts / fills outside the ops", "elementwise, reductions, embedding, pooling").
std::string op_class(const std::string& op);

struct BreakdownRow {
  std::string name;
  double ms = 0;
};
// One row per class (largest first), then "launch gaps and host work" = step_ms - the classes' sum (never below 0).
std::vector<BreakdownRow> breakdown_table(const std::map<std::string, double>& op_ms, double step_ms);

}  // namespace mt::train
