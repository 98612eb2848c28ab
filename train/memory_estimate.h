// Peak GPU memory of a training step, estimated from what each op keeps for the backward (mamba-train info).
//
// Per token and layer, a forward on the tape keeps (a = bytes of the compute dtype, d = d_model, di = d_inner,
// R = dt_rank, N = d_state): the residual stream in f32 and the norm's 1/rms (4 d + 4), the in_proj input (a d), the
// x and z halves and the conv output (3 a di), delta and the scan output (2 a di), dt, B and C (a (R + 2N)), and on
// CUDA the scan's saved tile states (one state in 16 steps: 4 di N / 16). With trainer.activation_checkpointing
// block a layer keeps only its inputs (a d + 4 d), and one block's activations exist while it is recomputed; with
// trainer.chunk_len only one chunk's tokens are kept, plus every chunk boundary's states. Around them: the weights
// (f32 masters, gradients and both Adam moments, and the compute-dtype copies), then the larger of two phases: the LM
// loss's working set (one scratch of at most 512 MiB of compute-dtype logits, which their gradient overwrites, and
// the f32 gradient of the head), or one layer's backward (its gradient buffers with the scan backward's per-block
// dB / dC partials, and with checkpointing the block's recomputed activations).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/dtype.h"
#include "nn/config.h"

namespace mt::train {

struct MemoryEstimateInput {
  MambaConfig model;
  int64_t micro_batch = 8, seq_len = 2048;
  DType compute = DType::BF16;
  int64_t chunk_len = 0;           // 0: whole sequences
  bool checkpoint_blocks = false;  // trainer.activation_checkpointing block
  bool lm = true;                  // the LM head and loss (else a classifier: no logits over the vocabulary)
};

struct MemoryEstimate {
  double weights = 0;      // bytes
  double activations = 0;  // kept for the backward
  double recompute = 0;    // one block's activations during its recompute (checkpointing)
  double boundaries = 0;   // chunk boundary states
  double loss = 0;         // LM head and loss working set
  double backward = 0;     // one layer's gradient buffers
  // The loss runs before the backward and frees its scratch: the peak is the larger of the two phases.
  double total() const { return weights + activations + boundaries + std::max(loss, recompute + backward); }
};

MemoryEstimate estimate_training_memory(const MemoryEstimateInput& in);

}  // namespace mt::train
