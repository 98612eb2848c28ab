// The formulas that turn Philox bits into distributions, shared verbatim by the CPU and CUDA paths so that both
// produce the same numbers (uniform and randint bit-identical; normal equal up to the last bits of log/cos).
#pragma once

#include <math.h>

#include "core/rng.h"

namespace mt {

MT_HD double rng_uniform(bool f64, uint64_t seed, uint64_t offset, uint64_t i, double lo, double hi) {
  double u = f64 ? Philox::uniform_double(seed, offset, i) : static_cast<double>(Philox::uniform(seed, offset, i));
  // An explicit fused multiply-add: nvcc contracts lo + (hi-lo)*u into an FMA on the GPU and g++ does not on the
  // CPU, which would make the two differ in the last bit. fma() rounds once on both, so they agree exactly.
  return fma(hi - lo, u, lo);
}

// Box-Muller on two uniforms (lanes 2i and 2i+1 of the stream); 1-u keeps log's argument in (0, 1].
MT_HD double rng_normal(bool f64, uint64_t seed, uint64_t offset, uint64_t i, double mean, double std) {
  double u1, u2;
  if (f64) {
    u1 = Philox::uniform_double(seed, offset, 2 * i);
    u2 = Philox::uniform_double(seed, offset, 2 * i + 1);
    return fma(std, sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2), mean);
  }
  float a = Philox::uniform(seed, offset, 2 * i), b = Philox::uniform(seed, offset, 2 * i + 1);
  float z = sqrtf(-2.0f * logf(1.0f - a)) * cosf(6.2831853f * b);
  return fma(std, static_cast<double>(z), mean);
}

// Integers in [lo, hi): 32 random bits times the range, high word (unbiased enough for ranges << 2^32).
MT_HD int64_t rng_randint(uint64_t seed, uint64_t offset, uint64_t i, int64_t lo, int64_t hi) {
  uint32_t r[4];
  Philox::block(seed, offset + i / 4, r);
  uint64_t range = static_cast<uint64_t>(hi - lo);
  return lo + static_cast<int64_t>((static_cast<uint64_t>(r[i % 4]) * range) >> 32);
}

}  // namespace mt
