// Element formulas of the single-token decode kernels (kernels/decode_gemv.h, ssm_step.h, sampling.h),
// shared verbatim by the CPU references and the CUDA kernels so that both evaluate the same expressions.
// C is the compute type: float (f32 / bf16 / f16 storage) or double (f64 storage).
#pragma once

#include <math.h>

#include <cstdint>

#include "core/dtype.h"  // MT_HD
#include "core/rng.h"

// Loop unrolling for nvcc (register arrays need compile-time indices); nothing for the host compiler.
#if defined(__CUDACC__)
#define MT_DECODE_UNROLL _Pragma("unroll")
#else
#define MT_DECODE_UNROLL
#endif

namespace mt::kernels::decode {

// Math functions are named ::f: inside namespace mt an unqualified exp would find mt::exp (autograd/ops/
// elementwise.h) first and fail to compile.
MT_HD float exp_c(float x) { return ::expf(x); }
MT_HD double exp_c(double x) { return ::exp(x); }
MT_HD float log1p_c(float x) { return ::log1pf(x); }
MT_HD double log1p_c(double x) { return ::log1p(x); }

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

// The causal conv of one channel for one new input x: pre = bias + sum_{j < K-1} w[j] * s[j] + w[K-1] * x, with s the
// previous K-1 inputs (oldest first). KMAX >= K bounds the unrolled loops, so that on the GPU w and s can live in
// registers (no runtime index into them).
template <int KMAX, typename C>
MT_HD C conv_pre(C x, int K, const C* w, const C* s, C bias) {
  C acc = bias;
  MT_DECODE_UNROLL
  for (int j = 0; j < KMAX; ++j)
    if (j < K) acc += w[j] * (j + 1 < K ? s[j] : x);
  return acc;
}

// ---- ssm_step: the order in which the P partial sums of x_proj are added (both backends, so that they agree to the
// bit on equal partials). G groups (g < G) each add the partials p = g, g + G, g + 2G, ... into 8 accumulators
// (accumulator j takes p = g + (8i + j) G, i = 0, 1, ...), combined pairwise; the G group sums are then added in
// order g = 0, 1, ... On the GPU, thread g * E + e of a block of kSsmStepThreads computes group g of output e.
constexpr int64_t kSsmStepThreads = 256;
MT_HD int64_t ssm_step_groups(int64_t E, int64_t P) {
  const int64_t g = kSsmStepThreads / E;
  return g < 1 ? 1 : (g > P ? P : g);
}
template <typename C, typename Get>
MT_HD C partial_group_sum(int64_t P, int64_t G, int64_t g, Get get) {
  C a[8] = {C(0), C(0), C(0), C(0), C(0), C(0), C(0), C(0)};
  // Chunks of 32 partials: all loads of a chunk are issued before its adds (one memory round trip on the GPU); the
  // adds keep the order above.
  for (int64_t q0 = g; q0 < P; q0 += 32 * G) {
    C v[32];
    MT_DECODE_UNROLL
    for (int k = 0; k < 32; ++k) v[k] = q0 + k * G < P ? get(q0 + k * G) : C(0);
    MT_DECODE_UNROLL
    for (int k = 0; k < 32; ++k)
      if (q0 + k * G < P) a[k % 8] += v[k];
  }
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
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
  const float e = l == max_l ? 1.0f : ::expf(l - max_l);
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
  return static_cast<uint64_t>(::ceil(top_p * static_cast<double>(total)));
}

// Position of the draw inside the kept weight `kept`: floor(u * kept) < kept.
MT_HD uint64_t draw_target(float u, uint64_t kept) {
  return static_cast<uint64_t>(static_cast<double>(u) * static_cast<double>(kept));
}

}  // namespace mt::kernels::decode
