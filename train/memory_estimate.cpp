#include "train/memory_estimate.h"

#include <algorithm>
#include <cmath>

namespace mt::train {

MemoryEstimate estimate_training_memory(const MemoryEstimateInput& in) {
  MambaConfig m = in.model;
  m.finalize();
  const double a = static_cast<double>(dtype_size(in.compute));
  const double d = static_cast<double>(m.d_model), di = static_cast<double>(m.d_inner);
  const double R = static_cast<double>(m.dt_rank), N = static_cast<double>(m.d_state);
  const double K = static_cast<double>(m.d_conv), layers = static_cast<double>(m.n_layer);
  const double V = static_cast<double>(m.vocab_size), P = static_cast<double>(m.num_parameters());
  const double B = static_cast<double>(in.micro_batch), L = static_cast<double>(in.seq_len);
  const bool chunked = in.chunk_len > 0 && in.chunk_len < in.seq_len;
  const double kept_len = chunked ? static_cast<double>(in.chunk_len) : L;
  const double kept_tokens = B * kept_len;

  // Per layer and token (the header lists the terms), five d_inner-wide activations among them.
  const double per_layer_token = 4 * d + 4 + a * (d + 5 * di + R + 2 * N) + 4 * di * N / 16;
  const double inputs_per_layer_token = a * d + 4 * d;
  MemoryEstimate e;
  e.weights = P * (4 + 4 + 4 + 4 + (a < 4 ? a : 0));
  if (in.checkpoint_blocks) {
    e.activations = layers * kept_tokens * inputs_per_layer_token;
    e.recompute = kept_tokens * per_layer_token;
  } else {
    e.activations = layers * kept_tokens * per_layer_token;
  }
  e.activations += kept_tokens * (4 * d + a * d);  // the final norm's saved residual and the head's input
  if (chunked) {
    const double chunks = std::ceil(L / static_cast<double>(in.chunk_len));
    e.boundaries = chunks * layers * B * di * (4 * N + a * (K - 1));
  }
  if (in.lm) {
    // linear_cross_entropy: one scratch of logits in the compute dtype, at most 512 MiB (row chunks; the gradient
    // overwrites it), the f32 head gradient, and dh for the rows.
    const double rows = kept_tokens;
    const double logits = std::min(rows * V * a, 512.0 * 1024 * 1024);
    e.loss = logits + V * d * 4 + rows * d * a;
  }
  // One layer's backward: the gradients of the x / z halves, the conv output, delta, the scan output and in_proj's
  // output flowing at once, the scan backward's per-block dB / dC partials (f32, one set per 32 channels), and the
  // residual stream's gradient.
  e.backward = kept_tokens * (a * 6 * di + std::ceil(di / 32) * 2 * N * 4 + 4 * d + a * d);
  return e;
}

}  // namespace mt::train
