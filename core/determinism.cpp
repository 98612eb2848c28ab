#include "core/determinism.h"

#include <atomic>

namespace mt {

namespace {
std::atomic<bool> g_deterministic{false};
}  // namespace

bool deterministic_kernels() { return g_deterministic.load(std::memory_order_relaxed); }
void set_deterministic_kernels(bool on) { g_deterministic.store(on, std::memory_order_relaxed); }

}  // namespace mt
