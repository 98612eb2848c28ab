// Byte ranges that a CUDA decode kernel asks the L2 cache to fetch from DRAM before it waits for the previous kernel:
// what a later kernel of the step reads (its weights, and the conv state and weights it loads before its own wait), so
// that the later kernel finds it in L2. A hint only: it changes no result, ranges the GPU cannot prefetch (not 16-byte
// aligned) are dropped, and the CPU kernels ignore it.
#pragma once

#include <cstdint>

namespace mt::kernels {

struct L2Prefetch {
  static constexpr int kMax = 8;
  const void* ptr[kMax] = {};
  int64_t bytes[kMax] = {};

  // Adds [p, p + n); ranges past kMax, empty ones and those not 16-byte aligned are dropped.
  void add(const void* p, int64_t n) {
    if (p == nullptr || n < 16 || reinterpret_cast<uintptr_t>(p) % 16 != 0) return;
    for (int i = 0; i < kMax; ++i)
      if (ptr[i] == nullptr) {
        ptr[i] = p;
        bytes[i] = n;
        return;
      }
  }
};

}  // namespace mt::kernels
