// generate(): text generation with a MambaLMHeadModel. Prompts of equal length are decoded together (a prompt's
// token is never used as padding: prompts of different lengths go into different batches), each by a DecodeEngine
// (nn/decode_engine.h): the prompt in parallel, then one recurrent step per new token.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "nn/decode_engine.h"

namespace mt::nn {

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplingConfig sampling;
  int64_t eos_token_id = -1;  // a row stops at this token (not returned); < 0: none, rows stop at max_new_tokens
  DType compute_dtype = DType::F32;
  int64_t max_batch = 64;   // prompts decoded together at most
  int64_t poll_every = 16;  // steps between looks at the new tokens (end-of-sequence checks and on_tokens calls)
  // fused / cuda_graph / pdl / gemv_max_batch; batch, max_new_tokens, compute_dtype and sampling come from above.
  DecodeEngineOptions engine;
  // Called with a prompt's next new tokens, in order, as they become known (the end-of-sequence token excluded).
  std::function<void(size_t prompt, const std::vector<int64_t>& tokens)> on_tokens;
};

struct GenerateReport {
  int64_t new_tokens = 0;  // returned, over all prompts
  std::string engine;      // DecodeEngine::describe() of the last batch
};

// The new tokens of every prompt, in the prompts' order. mt::Error(Data) for an empty prompt or a token id outside
// [0, vocab_size), naming the prompt (counted from 1) and the position; mt::Error(Usage) for bad options or a
// bidirectional model.
std::vector<std::vector<int64_t>> generate(const MambaLMHeadModel& model, Device dev,
                                           const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& opt,
                                           GenerateReport* report = nullptr);

}  // namespace mt::nn
