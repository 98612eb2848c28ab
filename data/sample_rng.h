// Per-sample random numbers for the data sources: a pure function of (seed, domain, sample index, draw number),
// built on Philox (core/rng.h), so batches never depend on how many samples were drawn before.
//
// Sample i of a source with seed s draws from the stream
//   subkey   = the first 64 bits of Philox(key = s ^ domain, counter = i)
//   draw k   = 64 bits from Philox(key = subkey, counter = k / 2), lanes 2(k%2), 2(k%2)+1
// `domain` separates sources (and train from validation), so they never share a stream for the same seed.
#pragma once

#include <cstdint>

#include "core/rng.h"

namespace mt::data {

class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t domain, uint64_t sample) {
    uint32_t r[4];
    Philox::block(seed ^ domain, sample, r);
    key_ = (static_cast<uint64_t>(r[1]) << 32) | r[0];
  }
  // The next 64 uniformly random bits.
  uint64_t next64() {
    if (k_ % 2 == 0) Philox::block(key_, k_ / 2, buf_);
    const int lane = static_cast<int>(k_ % 2) * 2;
    ++k_;
    return (static_cast<uint64_t>(buf_[lane + 1]) << 32) | buf_[lane];
  }
  // Uniform integer in [0, n), n >= 1. The modulo bias is below n / 2^64 (negligible for any data size).
  uint64_t below(uint64_t n) { return next64() % n; }

 private:
  uint64_t key_ = 0;
  uint64_t k_ = 0;
  uint32_t buf_[4] = {0, 0, 0, 0};
};

}  // namespace mt::data
