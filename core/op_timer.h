// Optional per-op timing (`mamba-train bench --breakdown`). While a timer is installed, every kernel call the ops
// make through ops::Dispatch / ops::run_cuda (autograd/ops/dispatch.h) is bracketed by begin / end under the op's
// name; a call made inside another timed call counts only in the outer one. Without a timer the cost is one load
// and a branch per kernel call.
#pragma once

namespace mt {

class OpTimer {
 public:
  virtual ~OpTimer() = default;
  virtual void begin(const char* op, bool cuda) = 0;
  virtual void end(const char* op, bool cuda) = 0;
};

OpTimer* op_timer();
void set_op_timer(OpTimer* t);  // null: nothing is timed

// begin on construction and end on destruction, when a timer is installed and no timed call encloses this one.
class OpTimeScope {
 public:
  OpTimeScope(const char* op, bool cuda);
  ~OpTimeScope();
  OpTimeScope(const OpTimeScope&) = delete;
  OpTimeScope& operator=(const OpTimeScope&) = delete;

 private:
  OpTimer* timer_ = nullptr;  // set in the outermost timed call only
  bool counted_ = false;      // this scope took part in the nesting count
  const char* op_;
  bool cuda_;
};

}  // namespace mt
