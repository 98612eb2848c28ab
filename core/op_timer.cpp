#include "core/op_timer.h"

#include <atomic>

namespace mt {

namespace {
std::atomic<OpTimer*> g_timer{nullptr};
thread_local int t_depth = 0;  // timed calls open on this thread
}  // namespace

OpTimer* op_timer() { return g_timer.load(std::memory_order_relaxed); }
void set_op_timer(OpTimer* t) { g_timer.store(t, std::memory_order_relaxed); }

OpTimeScope::OpTimeScope(const char* op, bool cuda) : op_(op), cuda_(cuda) {
  OpTimer* t = op_timer();
  if (t == nullptr) return;
  counted_ = true;
  if (t_depth++ == 0) {
    timer_ = t;
    timer_->begin(op_, cuda_);
  }
}

OpTimeScope::~OpTimeScope() {
  if (!counted_) return;
  --t_depth;
  if (timer_ != nullptr) timer_->end(op_, cuda_);
}

}  // namespace mt
