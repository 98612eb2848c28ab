// How the scan and the conv walk one [B, L] row, shared by their CPU and CUDA kernels: in order, or backwards for
// their reverse mode (the kernel of the sequence flipped in time, reading and writing every tensor in place).
#pragma once

#include <cstdint>

#include "core/dtype.h"  // MT_HD

namespace mt::kernels {

struct TimeMap {
  int64_t L;
  bool reverse;
  const int32_t* reset;  // [B, L], nonzero where a document starts; null: none

  // The position step s of the walk reads: s, or L-1-s reversed.
  MT_HD int64_t pos(int64_t s) const { return reverse ? L - 1 - s : s; }
  // Element offset of step s of row b in a [B, L] index space.
  MT_HD int64_t row(int64_t b, int64_t s) const { return b * L + pos(s); }
  // A document starts at step s of row b, as the walk sees it. Read backwards, a document that starts at position t
  // ends there, so the next one (in walk order) starts at step L - t.
  MT_HD bool starts(int64_t b, int64_t s) const {
    if (reset == nullptr) return false;
    return reverse ? s > 0 && reset[b * L + L - s] != 0 : reset[b * L + s] != 0;
  }
};

}  // namespace mt::kernels
