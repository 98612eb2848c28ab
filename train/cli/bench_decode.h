// mamba-train bench decode (train/cli/bench_decode.cpp): generation throughput of a model with random weights.
#pragma once

#include <string>
#include <vector>

#include "core/dtype.h"
#include "nn/decode_engine.h"

namespace mt::train {

struct DecodeBenchOptions {
  std::string variant = "130m";
  std::vector<std::string> sets;  // MambaConfig overrides (field=value)
  std::vector<int64_t> batches = {1, 64};
  int64_t prompt_len = 128;
  int64_t new_tokens = 512;
  std::string device = "auto";
  std::string dtype;  // empty: bf16 on CUDA, f32 on the CPU
  int repeats = 3;
  // Sampling of the new tokens (the default is greedy; --check needs greedy).
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  // After timing: the first rows' greedy tokens against the argmax of the parallel forward over prompt + tokens.
  bool check = false;
  nn::DecodeEngineOptions engine;  // fused / cuda_graph / pdl / gemv_max_batch
};

// For each batch size: one untimed call (the CUDA graph is captured there), then `repeats` timed calls of a
// generation (greedy unless temperature > 0) (the prompt in parallel, then new_tokens - 1 recurrent steps); prints one
// line per batch size with new tokens per second over the whole call (median call), the prompt time and the time per
// step. With `check`, a second line per batch size compares the greedy tokens of up to 4 rows (the first 64 of each)
// with the argmax of the model's parallel forward (same dtype) over the prompt and those tokens, position by position.
// Returns the exit code.
int run_decode_bench(const DecodeBenchOptions& o);

// "1,64" -> {1, 64}; mt::Error(Usage) for anything but a comma-separated list of positive integers.
std::vector<int64_t> parse_batch_list(const std::string& s);

}  // namespace mt::train
