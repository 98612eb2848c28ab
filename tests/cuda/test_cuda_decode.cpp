// The decode engine on the GPU against the CPU engine: whole generations (per-step logits, greedy tokens, the CUDA
// graph and PDL paths, the cuBLAS path for large batches). The decode kernels themselves are compared kernel by
// kernel in the op table (tests/ops/decode_checks.cpp).
#include <algorithm>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/allocator.h"
#include "nn/generate.h"
#include "test_util.h"

using namespace mt;

namespace {

MambaConfig decode_config(bool odd) {
  MambaConfig c;
  c.vocab_size = 1000;
  c.d_model = 64;
  c.n_layer = 3;
  c.d_state = 16;
  c.d_conv = 4;
  if (odd) {  // d_inner % 16 = 8, LayerNorm, untied head, biases
    c.d_model = 48;
    c.d_inner = 72;
    c.norm = NormKind::LayerNorm;
    c.tie_embeddings = false;
    c.proj_bias = true;
  }
  c.finalize();
  return c;
}

std::unique_ptr<nn::MambaLMHeadModel> decode_model(const MambaConfig& c, Device dev) {
  auto m = std::make_unique<nn::MambaLMHeadModel>(c);
  Generator g(9);
  m->init_parameters(g);
  m->to(dev);
  return m;
}

struct DecodeRun {
  std::vector<std::vector<double>> logits;
  std::vector<int64_t> tokens;
  std::string mode;
};

DecodeRun decode(const nn::MambaLMHeadModel& m, Device dev, DType cd, const std::vector<int64_t>& prompt, int64_t B,
                 int64_t n, nn::DecodeEngineOptions o = {}) {
  o.batch = B;
  o.max_new_tokens = n;
  o.compute_dtype = cd;
  o.sampling.temperature = 0.0;
  nn::DecodeEngine e(m, dev, o);
  std::vector<int64_t> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) rows[b] = b;
  e.prefill(Tensor::from_vector_i64(prompt, {B, static_cast<int64_t>(prompt.size()) / B}), rows);
  DecodeRun r;
  r.logits.push_back(e.logits().to_vector());
  for (int64_t s = 1; s < n; ++s) {
    e.step(1);
    r.logits.push_back(e.logits().to_vector());
  }
  r.tokens = e.tokens(0, n);
  r.mode = e.describe();
  return r;
}

std::vector<int64_t> prompt_ids(int64_t n, int64_t V) {
  Generator g(21);
  return Tensor::randint({n}, g, 0, V).to_vector_i64();
}

}  // namespace

TEST(CudaDecode, EngineStepsMatchTheCpuEngineAndGreedyIsTheParallelArgmax) {
  MT_REQUIRE_CUDA();
  for (bool odd : {false, true})
    for (int64_t B : {2, 12}) {  // the GEMV kernels, then the cuBLAS path
      const MambaConfig c = decode_config(odd);
      auto gpu = decode_model(c, Device::cuda());
      auto cpu = decode_model(c, Device::cpu());
      const int64_t L = 5, n = 8, V = c.vocab_size;
      const std::vector<int64_t> prompt = prompt_ids(B * L, V);
      const DecodeRun g = decode(*gpu, Device::cuda(), DType::F32, prompt, B, n);
      const DecodeRun r = decode(*cpu, Device::cpu(), DType::F32, prompt, B, n);
      const std::string what = std::string(odd ? "odd" : "plain") + " B " + std::to_string(B) + " (" + g.mode + ")";
      EXPECT_NE(g.mode.find("cuda graph"), std::string::npos) << what;
      EXPECT_NE(g.mode.find(B <= nn::DecodeEngineOptions{}.gemv_max_batch ? "gemv kernels" : "cublas projections"),
                std::string::npos)
          << what;
      // Until the first (near-tie) token difference the two runs see the same inputs.
      int64_t same = n;
      for (int64_t s = 0; s < n && same == n; ++s)
        for (int64_t b = 0; b < B; ++b)
          if (g.tokens[b * n + s] != r.tokens[b * n + s]) same = s + 1;
      for (int64_t s = 0; s < same; ++s)
        EXPECT_LE(test::tolerance_ratio(g.logits[s], r.logits[s], 2e-4, 2e-4), 1.0) << what << " step " << s;
      // Greedy = argmax of the GPU's own parallel forward over prompt + generated tokens.
      std::vector<int64_t> full;
      for (int64_t b = 0; b < B; ++b) {
        full.insert(full.end(), prompt.begin() + b * L, prompt.begin() + (b + 1) * L);
        full.insert(full.end(), g.tokens.begin() + b * n, g.tokens.begin() + b * n + n - 1);
      }
      NoGradGuard ng;
      nn::ForwardOptions fo;
      const int64_t T = L + n - 1;
      const std::vector<double> ref =
          gpu->forward(Tensor::from_vector_i64(full, {B, T}).to(Device::cuda()), fo).logits.to_vector();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < n; ++s) {
          const double* row = &ref[(b * T + L - 1 + s) * V];
          const int64_t best = std::max_element(row, row + V) - row, tok = g.tokens[b * n + s];
          if (tok != best) {
            EXPECT_LE(row[best] - row[tok], 1e-4) << what << " row " << b << " step " << s;
          }
          const std::vector<double> want(row, row + V),
              got(g.logits[s].begin() + b * V, g.logits[s].begin() + (b + 1) * V);
          EXPECT_LE(test::tolerance_ratio(got, want, 2e-4, 2e-4), 1.0)
              << what << " parallel, row " << b << " step " << s;
        }
    }
}

TEST(CudaDecode, Bf16EngineTracksTheCpuBf16Engine) {
  MT_REQUIRE_CUDA();
  for (int64_t B : {1, 12}) {
    const MambaConfig c = decode_config(false);
    auto gpu = decode_model(c, Device::cuda());
    auto cpu = decode_model(c, Device::cpu());
    const std::vector<int64_t> prompt = prompt_ids(B * 4, c.vocab_size);
    const DecodeRun g = decode(*gpu, Device::cuda(), DType::BF16, prompt, B, 6);
    const DecodeRun r = decode(*cpu, Device::cpu(), DType::BF16, prompt, B, 6);
    for (size_t s = 0; s < g.logits.size(); ++s) {
      if (s > 0 && g.tokens != r.tokens) break;  // a bf16 near-tie took another path
      EXPECT_LE(test::rel_l2(g.logits[s], r.logits[s]), 2e-2) << "B " << B << " step " << s << " (" << g.mode << ")";
    }
  }
}

TEST(CudaDecode, GraphPdlAndEagerLaunchesGiveTheSameBits) {
  MT_REQUIRE_CUDA();
  const MambaConfig c = decode_config(true);
  auto gpu = decode_model(c, Device::cuda());
  const std::vector<int64_t> prompt = prompt_ids(3 * 4, c.vocab_size);
  nn::DecodeEngineOptions gemv;
  gemv.gemv_max_batch = 8;  // batch 3 on the GEMV kernels
  const DecodeRun base = decode(*gpu, Device::cuda(), DType::BF16, prompt, 3, 10, gemv);
  for (int mode = 0; mode < 3; ++mode) {
    nn::DecodeEngineOptions o;
    o.cuda_graph = mode != 0;
    o.pdl = mode != 1;
    o.gemv_max_batch = mode == 2 ? 0 : 8;  // mode 2: the cuBLAS path (other arithmetic: tokens only compared loosely)
    const DecodeRun r = decode(*gpu, Device::cuda(), DType::BF16, prompt, 3, 10, o);
    if (mode < 2) {
      EXPECT_EQ(r.tokens, base.tokens) << r.mode;
      EXPECT_EQ(r.logits, base.logits) << r.mode;
    } else {
      EXPECT_LE(test::rel_l2(r.logits[0], base.logits[0]), 1e-6) << r.mode;  // the prefill's logits
      EXPECT_LE(test::rel_l2(r.logits[1], base.logits[1]), 2e-2) << r.mode;
    }
  }
}

TEST(CudaDecode, GenerateOnTheGpuEqualsTheCpuForGreedyAndSampledTokens) {
  MT_REQUIRE_CUDA();
  const MambaConfig c = decode_config(false);
  auto gpu = decode_model(c, Device::cuda());
  auto cpu = decode_model(c, Device::cpu());
  nn::GenerateOptions o;
  o.max_new_tokens = 12;
  o.compute_dtype = DType::F64;  // the reference path on the GPU: near-identical logits, so identical draws
  o.sampling.temperature = 0.9;
  o.sampling.top_k = 30;
  o.sampling.top_p = 0.9;
  o.sampling.repetition_penalty = 1.2;
  o.sampling.seed = 4;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8}};
  gpu->to(DType::F64);
  cpu->to(DType::F64);
  EXPECT_EQ(nn::generate(*gpu, Device::cuda(), prompts, o), nn::generate(*cpu, Device::cpu(), prompts, o));
  // No allocation happens while the graph is captured or replayed: once the caching allocator has settled (the
  // prompts' parallel forward frees and reuses blocks of several sizes, so the first two calls may still add one),
  // another call leaves the number of device allocations as it was.
  gpu->to(DType::F32);
  o.compute_dtype = DType::BF16;
  for (int warm = 0; warm < 2; ++warm) nn::generate(*gpu, Device::cuda(), prompts, o);
  const int64_t before = cuda_memory_stats().num_device_mallocs;
  nn::generate(*gpu, Device::cuda(), prompts, o);
  EXPECT_EQ(cuda_memory_stats().num_device_mallocs, before);
}
