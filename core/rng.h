// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011). A number depends only on (seed, counter),
// so the CPU and the GPU produce the same stream for the same element index, and the generator state is two
// integers that go into checkpoints.
//
// Element i of a float draw made at generator offset o uses counter (o + i/4) and lane i%4; a double draw uses
// counter (o + i/2). A draw of n elements advances the offset by ceil(n/2), enough for either, so consecutive
// draws never share counters.
#pragma once

#include <cstdint>

#include "core/dtype.h"  // MT_HD

namespace mt {

struct Philox {
  // Four 32-bit outputs for (key, counter).
  MT_HD static void block(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int r = 0; r < 10; ++r) {
      uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
      uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
      uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
      c0 = n0;
      c1 = n1;
      c2 = n2;
      c3 = n3;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
  }
  // Uniform in [0, 1) with 24 random bits (exactly representable in float).
  MT_HD static float uniform(uint64_t key, uint64_t offset, uint64_t i) {
    uint32_t r[4];
    block(key, offset + i / 4, r);
    return static_cast<float>(r[i % 4] >> 8) * (1.0f / 16777216.0f);
  }
  // Uniform in [0, 1) with 53 random bits, for f64 tensors (uses two lanes: element i takes lanes 2(i%2), 2(i%2)+1
  // of counter offset + i/2).
  MT_HD static double uniform_double(uint64_t key, uint64_t offset, uint64_t i) {
    uint32_t r[4];
    block(key, offset + i / 2, r);
    uint64_t hi = r[(i % 2) * 2] >> 5, lo = r[(i % 2) * 2 + 1] >> 6;  // 27 + 26 bits
    return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
  }
};

// Saved and restored with checkpoints.
struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { state_.seed = seed; }
  uint64_t seed() const { return state_.seed; }
  uint64_t offset() const { return state_.offset; }
  GeneratorState state() const { return state_; }
  void set_state(const GeneratorState& s) { state_ = s; }
  // Reserve counters for a draw of n elements; returns the offset to pass to Philox::uniform.
  uint64_t reserve(uint64_t n) {
    uint64_t o = state_.offset;
    state_.offset += (n + 1) / 2;
    return o;
  }

 private:
  GeneratorState state_;
};

}  // namespace mt
