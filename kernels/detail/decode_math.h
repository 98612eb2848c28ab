// Element formulas of the single-token decode kernels (kernels/decode_gemv.h, conv_step.h, ssm_step.h, sampling.h),
// shared verbatim by the CPU references and the CUDA kernels so that both evaluate the same expressions.
// C is the compute type: float (f32 / bf16 / f16 storage) or double (f64 storage).
#pragma once

#include <math.h>

#include <cstdint>

#include "core/dtype.h"  // MT_HD
#include "core/rng.h"

namespace mt::kernels::decode {

MT_HD float exp_c(float x) { return expf(x); }
MT_HD double exp_c(double x) { return exp(x); }
MT_HD float log1p_c(float x) { return log1pf(x); }
MT_HD double log1p_c(double x) { return log1p(x); }

template <typename C>
MT_HD C sigmoid(C v) {
  return C(1) / (C(1) + exp_c(-v));
}
template <typename C>
MT_HD C silu(C v) {
  return v * sigmoid(v);
}
// softplus with PyTorch's / mamba's threshold: x above 20 passes through.
template <typename C>
MT_HD C softplus(C x) {
  return x <= C(20) ? log1p_c(exp_c(x)) : x;
}

// One channel of the causal conv for one new input x: state holds the previous K-1 inputs, oldest first, at
// state[j * state_stride]; w the K taps (w[K-1] multiplies x). Returns the pre-activation and shifts x into the
// state. load / store convert between the storage type and C.
template <typename C, typename Load, typename Store>
MT_HD C conv_step_one(C x, int64_t K, int64_t state_stride, Load load_state, Store store_state, const C* w, C bias) {
  C acc = bias;
  for (int64_t j = 0; j + 1 < K; ++j) acc += w[j] * load_state(j * state_stride);
  acc += w[K - 1] * x;
  for (int64_t j = 0; j + 2 < K; ++j) store_state(j * state_stride, load_state((j + 1) * state_stride));
  if (K > 1) store_state((K - 2) * state_stride, x);
  return acc;
}

// ---- sampling ----

// An order-preserving map of a float onto uint32 (a > b <=> key(a) > key(b); -0 sorts just below +0). NaN maps to
// 0, below every number, so a NaN logit is never chosen while a number exists.
MT_HD uint32_t order_key(float x) {
  if (x != x) return 0u;
  uint32_t u;
  memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The logit that sampling works on: the repetition penalty (HF's rule: a positive logit of a seen token is divided
// by the penalty, a negative one multiplied), then the temperature (skipped for greedy, temperature 0).
MT_HD float scaled_logit(float logit, bool seen, float penalty, float temperature) {
  if (seen && penalty != 1.0f) logit = logit > 0.0f ? logit / penalty : logit * penalty;
  return temperature > 0.0f ? logit / temperature : logit;
}

// Fixed-point weight of a token: exp(l - max) in units of 2^-31 (so a row sums exactly in uint64 for any vocabulary
// below 2^32 tokens, and sums do not depend on their order). The maximum weighs 2^31; a token below 2^-31 of it
// weighs 0 and is never drawn. key 0 (NaN) weighs 0.
MT_HD uint32_t token_weight(float l, float max_l, uint32_t key) {
  if (key == 0u) return 0u;
  const float e = l == max_l ? 1.0f : expf(l - max_l);
  return e == e ? static_cast<uint32_t>(e * 2147483648.0f) : 0u;
}

// The uniform in [0, 1) that draws row `row`'s token number `step`: Philox lane row % 4 of counter
// (step << 32) + row / 4, so a draw depends on (seed, row, step) only, not on the batch the row is decoded in.
MT_HD float sample_uniform(uint64_t seed, int64_t step, int64_t row) {
  return Philox::uniform(seed, static_cast<uint64_t>(step) << 32, static_cast<uint64_t>(row));
}

// The top-p mass target: the kept set is the smallest prefix of tokens by descending logit whose weight reaches
// ceil(top_p * total) (ties at the boundary are all kept).
MT_HD uint64_t top_p_target(double top_p, uint64_t total) {
  return static_cast<uint64_t>(ceil(top_p * static_cast<double>(total)));
}

// Position of the draw inside the kept weight `kept`: floor(u * kept) < kept.
MT_HD uint64_t draw_target(float u, uint64_t kept) {
  return static_cast<uint64_t>(static_cast<double>(u) * static_cast<double>(kept));
}

}  // namespace mt::kernels::decode
