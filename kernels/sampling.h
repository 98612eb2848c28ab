// Next-token sampling for decoding: one token per row from a row of f32 logits [B, V].
//
// Per row b (formulas in kernels/detail/decode_math.h, shared by the CPU and the GPU):
//   1. l_v = logits[b, v], with the repetition penalty on tokens flagged in `seen` (positive l / penalty,
//      negative l * penalty, as HF transformers does), divided by the temperature when it is > 0.
//   2. temperature == 0 (greedy): the token with the largest l_v; the smallest id among equal maxima.
//   3. Otherwise every token gets an integer weight q_v = floor(exp(l_v - max l) * 2^31) (the maximum weighs 2^31,
//      NaN logits 0). Keys k_v = order_key(l_v) order the tokens by l_v.
//      top-k (0 < top_k < V): keep tokens with k_v >= t_k, the top_k-th largest key (ties at t_k are all kept).
//      top-p (top_p < 1): among those, Z = sum of their weights; keep tokens with k_v >= t_p, the largest key such
//        that the kept tokens at or above it weigh >= ceil(top_p * Z) (ties at t_p are all kept).
//      Draw: u = Philox uniform of (seed, row_ids[b], *step); M = weight of the kept tokens; target = floor(u * M);
//      the token is the first id v (ascending) with sum of kept q over ids <= v greater than target.
//   Integer weights make every sum exact and order-free: the CPU and the GPU pick the same token whenever they
//   compute the same exp() values (they may differ in the last bit of expf, which can move a draw that lands within
//   one weight unit of a boundary).
//   4. tokens[b] = the token; history[b, *step] = the token (when history is given and *step < history_len); the
//      token's bit is set in seen (when given).
//
// `step` is a device (or, for the CPU kernel, host) pointer so that a captured CUDA graph can replay the kernel
// with an advancing counter that another kernel increments.
#pragma once

#include <cstdint>

namespace mt::kernels {

struct SampleParams {
  int64_t B = 0, V = 0;
  const float* logits = nullptr;  // [B, V]
  // Bitmask [B, seen_words] (seen_words = ceil(V / 32)): bit v of row b is set when token v occurred in the row's
  // context. Required when repetition_penalty != 1; otherwise optional (still updated when given).
  uint32_t* seen = nullptr;
  int64_t seen_words = 0;
  float temperature = 1.0f;         // >= 0; 0 is greedy
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // (0, 1]; 1: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  uint64_t seed = 0;
  const int64_t* row_ids = nullptr;  // [B]: the RNG row of each row
  const int64_t* step = nullptr;     // [1]: index of the token being drawn (RNG step and history column)
  int64_t* tokens = nullptr;         // [B] out
  int64_t* history = nullptr;        // [B, history_len] or nullptr
  int64_t history_len = 0;
  // CUDA only: scratch [B, 2 * V] (keys and weights of the current row), required to sample. Greedy rows use it when
  // given, for the argmax over several blocks per row: it must then start zeroed (the kernel leaves it so).
  uint32_t* scratch = nullptr;
  bool pdl = false;  // CUDA only: launch with programmatic dependent launch (see kernels/decode_gemv.h)
};

// mt::Error(Usage) for out-of-range options: temperature < 0 or not finite, top_k < 0, top_p outside (0, 1],
// repetition_penalty <= 0 or not finite.
void sample_check_options(double temperature, int64_t top_k, double top_p, double repetition_penalty);
// The options, then mt::Error(Internal) for missing buffers.
void sample_check(const SampleParams& p);

void sample_cpu(const SampleParams& p);

// One block per row. Defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL
// (autograd/ops/dispatch.h).
void sample_cuda(const SampleParams& p);
// Greedy with a scratch: the blocks per row (slices of at least 4,096 logits, at most kSampleGreedyMaxBlocks).
constexpr int64_t kSampleGreedyMaxBlocks = 64;
int64_t sample_greedy_blocks_cuda(int64_t V);

}  // namespace mt::kernels
