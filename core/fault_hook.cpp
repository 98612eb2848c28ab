#include "core/fault_hook.h"

#include <atomic>

namespace mt {

namespace {
std::atomic<FaultHandler> g_handler{nullptr};
}

void set_fault_handler(FaultHandler h) { g_handler.store(h); }

bool fault_point(const char* site, int64_t value, int* err) {
  FaultHandler h = g_handler.load(std::memory_order_relaxed);
  return h != nullptr && h(site, value, err);
}

}  // namespace mt
