// DecodeEngine: batched autoregressive decoding of a MambaLMHeadModel, one O(1) recurrent step per new token.
//
// prefill() runs the prompts through the model's parallel forward (the scan with its final state, plus the conv
// state: nn/mamba.h InferenceCache), then every step() feeds each row's last token through the recurrence:
//
//   fused (default, every dtype on the CPU; f32 / bf16 / f16 on CUDA): per layer decode_gemv (residual add + norm,
//     in_proj, conv step, x_proj partial products), ssm_step (x_proj sums, dt_proj, softplus, state update, D, gate)
//     and decode_gemv (out_proj); then decode_gemv (norm_f + LM head) and sample. Weights are the model's compute-
//     dtype copies, all buffers are allocated once, and on CUDA the whole step is captured once in a CUDA graph and
//     replayed, its kernels chained by programmatic dependent launch. Batches above kDecodeGemvMaxBatch (or widths
//     the GEMV kernels do not take) use cuBLAS for in_proj, out_proj and the LM head: per layer decode_norm, GEMM,
//     ssm_step in row mode (conv step, x_proj, state update), GEMM.
//   reference (fused = false, and f64 on CUDA): the model's own forward with the inference cache, one token at a time.
//
// Sampling (kernels/sampling.h) runs on the engine's device; the tokens of a row depend on (seed, its row id, the
// token's index) only, so a prompt draws the same tokens in any batch. Rows never stop early: callers cut each row
// at its end-of-sequence token (generate() in nn/generate.h does).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/heads.h"

namespace mt::nn {

struct SamplingConfig {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  double repetition_penalty = 1.0;
  uint64_t seed = 0;
};

struct DecodeEngineOptions {
  int64_t batch = 1;
  int64_t max_new_tokens = 256;  // tokens per row per prefill, the first one (drawn by prefill) included
  DType compute_dtype = DType::F32;
  SamplingConfig sampling;
  bool fused = true;       // false: the reference path
  bool cuda_graph = true;  // CUDA: capture the step once and replay it
  bool pdl = true;         // CUDA: programmatic dependent launch between the step's kernels
  // CUDA: larger batches take the cuBLAS path (at most kDecodeGemvMaxBatch). On an H100 (130m, bf16) the GEMV
  // kernels win at batches 1 and 2 (441 against 640, 568 against 646 us per step) and cuBLAS from 3 (646 against 665).
  int64_t gemv_max_batch = 2;
  // CUDA, GEMV path, for benchmarks: this many empty kernels (one block per SM) after each of a layer's kernels. The
  // step's growth per kernel added is what a kernel boundary costs in the step's chain.
  int64_t empty_kernels = 0;
};

class DecodeEngine {
 public:
  // The model must outlive the engine; it is run in no-grad mode and not modified. mt::Error(Usage) for a
  // bidirectional model, bad sampling options or sizes.
  DecodeEngine(const MambaLMHeadModel& model, Device dev, const DecodeEngineOptions& opt);
  ~DecodeEngine();
  DecodeEngine(const DecodeEngine&) = delete;
  DecodeEngine& operator=(const DecodeEngine&) = delete;

  // Start all rows: ids [batch, L] (L >= 1, ids in [0, vocab_size), any device) run through the model in parallel;
  // each row's first new token is drawn from its logits at the last position. row_ids[b] is row b's RNG row (for
  // example its index among all prompts). May be called again to start a new batch (the engine is reusable; its
  // CUDA graph is kept).
  void prefill(const Tensor& ids, const std::vector<int64_t>& row_ids);
  // n more tokens per row; generated() + n <= max_new_tokens.
  void step(int64_t n = 1);
  int64_t generated() const { return generated_; }
  // Tokens [from, to) of every row (to <= generated()), row-major [batch, to - from]; synchronises.
  std::vector<int64_t> tokens(int64_t from, int64_t to) const;
  // The logits [batch, V] the latest token was drawn from, on the engine's device, in the state dtype (f32; f64
  // for f64). Sampling reads their f32 copy.
  const Tensor& logits() const { return logits_c_; }
  // "fused, cuda graph, pdl, gemv path" and the like (what actually runs, after any fallback).
  std::string describe() const;
  const DecodeEngineOptions& options() const { return opt_; }

 private:
  struct Layer;
  void run_step();        // one step's work, issued on the device (eager or under capture)
  void run_fused_step();  // the fused kernels
  void ssm_step(Layer& L, bool row_mode, const Layer* next = nullptr);  // next: the following layer, if any
  void run_reference_step();
  void sample(bool pdl);
  void capture_graph();

  const MambaLMHeadModel& model_;
  MambaConfig cfg_;
  Device dev_;
  DecodeEngineOptions opt_;
  DType cd_, sd_;  // compute and state dtypes
  bool fused_ = true;
  bool gemv_path_ = true;  // CUDA fused: the decode_gemv kernels (else cuBLAS)
  bool pdl_ = false;
  std::vector<Layer> layers_;
  Tensor embedding_, lm_head_, norm_f_w_, norm_f_b_;
  // Buffers
  Tensor tokens_, step_, row_ids_, history_, seen_, scratch_;
  Tensor h_, res_[2], xz_, xproj_, y_, xin_, xrow_, logits_c_, logits_;
  InferenceCache cache_;  // prefill output; the reference path keeps stepping it
  int64_t generated_ = 0;
  bool started_ = false;
  // CUDA graph of one step (opaque cudaGraphExec_t), and why there is none.
  void* graph_exec_ = nullptr;
  bool graph_tried_ = false;
  std::string graph_note_;
};

}  // namespace mt::nn
