// The process-wide switch for deterministic kernels (`run.deterministic`). Ops with a fast run-dependent CUDA path
// (atomics) take their fixed-order path while it is on; every other kernel is deterministic already. The CPU
// kernels do not read it: they are always deterministic.
#pragma once

namespace mt {

bool deterministic_kernels();
void set_deterministic_kernels(bool on);

// Sets the switch for a scope and restores the previous value.
class DeterministicKernelsGuard {
 public:
  explicit DeterministicKernelsGuard(bool on) : prev_(deterministic_kernels()) { set_deterministic_kernels(on); }
  ~DeterministicKernelsGuard() { set_deterministic_kernels(prev_); }
  DeterministicKernelsGuard(const DeterministicKernelsGuard&) = delete;
  DeterministicKernelsGuard& operator=(const DeterministicKernelsGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace mt
