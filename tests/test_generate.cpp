// Decoding on the CPU (nn/decode_engine.h, nn/generate.h): the per-step logits of the fused engine and of the
// reference path equal the parallel forward's, greedy tokens are its argmax, sampling is reproducible, rows stop at
// the end-of-sequence token, prompts of different lengths are grouped.
#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/autograd.h"
#include "kernels/detail/l2_prefetch.h"
#include "nn/generate.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;

namespace {

MambaConfig small_config(bool variant = false) {
  MambaConfig c;
  c.vocab_size = 37;
  c.d_model = 12;
  c.n_layer = 2;
  c.d_state = 5;
  c.d_conv = 3;
  c.expand = 2;
  c.d_inner = 0;
  c.dt_rank = 0;
  if (variant) {  // the other choice of every structural switch
    c.norm = NormKind::LayerNorm;
    c.tie_embeddings = false;
    c.proj_bias = true;
    c.conv_bias = false;
    c.d_conv = 4;
    c.n_layer = 3;
  }
  c.finalize();
  return c;
}

std::unique_ptr<MambaLMHeadModel> make_model(const MambaConfig& c, DType dt, uint64_t seed = 3) {
  auto m = std::make_unique<MambaLMHeadModel>(c);
  Generator g(seed);
  m->init_parameters(g);
  // Random biases where the variant has them, so that they matter.
  for (auto& np : m->named_parameters())
    if (np.first.find("proj.bias") != std::string::npos && np.first.find("dt_proj") == std::string::npos)
      *np.second = Tensor::randn(np.second->shape(), g, 0.0, 0.1);
  if (dt != DType::F32) m->to(dt == DType::F64 ? DType::F64 : DType::F32);
  return m;
}

std::vector<int64_t> random_ids(int64_t n, int64_t V, uint64_t seed) {
  Generator g(seed);
  return Tensor::randint({n}, g, 0, V).to_vector_i64();
}

// Logits [B, T, V] of the parallel forward over ids [B, T].
std::vector<double> parallel_logits(const MambaLMHeadModel& m, const std::vector<int64_t>& ids, int64_t B, DType cd) {
  NoGradGuard ng;
  ForwardOptions fo;
  fo.compute_dtype = cd;
  const int64_t T = static_cast<int64_t>(ids.size()) / B;
  return m.forward(Tensor::from_vector_i64(ids, {B, T}), fo).logits.to(DType::F64).to_vector();
}

int64_t argmax(const double* v, int64_t n) { return std::max_element(v, v + n) - v; }

// Second largest gap below the maximum: how close row v is to a tie.
double top2_gap(const double* v, int64_t n) {
  std::vector<double> s(v, v + n);
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<double>());
  return s[0] - s[1];
}

struct StepRun {
  std::vector<std::vector<double>> logits;  // per token drawn: [B * V]
  std::vector<int64_t> tokens;              // [B, n]
};

StepRun run_engine(const MambaLMHeadModel& m, const std::vector<int64_t>& prompt, int64_t B, int64_t n, DType cd,
                   bool fused, const SamplingConfig& sc = SamplingConfig{0.0}) {
  DecodeEngineOptions o;
  o.batch = B;
  o.max_new_tokens = n;
  o.compute_dtype = cd;
  o.fused = fused;
  o.sampling = sc;
  DecodeEngine e(m, Device::cpu(), o);
  std::vector<int64_t> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) rows[b] = b;
  const int64_t L = static_cast<int64_t>(prompt.size()) / B;
  e.prefill(Tensor::from_vector_i64(prompt, {B, L}), rows);
  StepRun r;
  r.logits.push_back(e.logits().to_vector());
  for (int64_t s = 1; s < n; ++s) {
    e.step(1);
    r.logits.push_back(e.logits().to_vector());
  }
  r.tokens = e.tokens(0, n);
  return r;
}

// Checks the engine's logits and greedy tokens against the parallel forward over prompt + generated tokens.
void check_against_parallel(const MambaLMHeadModel& m, const std::vector<int64_t>& prompt, int64_t B, int64_t n,
                            DType cd, bool fused, double atol, double rtol) {
  const int64_t V = m.config().vocab_size, L = static_cast<int64_t>(prompt.size()) / B;
  StepRun r = run_engine(m, prompt, B, n, cd, fused);
  std::vector<int64_t> full;
  for (int64_t b = 0; b < B; ++b) {
    full.insert(full.end(), prompt.begin() + b * L, prompt.begin() + (b + 1) * L);
    full.insert(full.end(), r.tokens.begin() + b * n, r.tokens.begin() + b * n + n - 1);
  }
  const int64_t T = L + n - 1;
  const std::vector<double> ref = parallel_logits(m, full, B, cd);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t b = 0; b < B; ++b) {
      const double* want = &ref[(b * T + L - 1 + s) * V];
      const std::vector<double> got(r.logits[s].begin() + b * V, r.logits[s].begin() + (b + 1) * V);
      EXPECT_LE(test::tolerance_ratio(got, std::vector<double>(want, want + V), atol, rtol), 1.0)
          << "step " << s << " row " << b;
      // Greedy: the parallel forward's argmax, unless the two best logits are within the tolerance (a near-tie
      // may go either way; the rest of the row then follows another path, still checked against its own logits).
      if (argmax(want, V) != r.tokens[b * n + s]) {
        EXPECT_LE(top2_gap(want, V), 2 * (atol + rtol * std::fabs(want[argmax(want, V)])))
            << "step " << s << " row " << b << ": token " << r.tokens[b * n + s] << ", argmax " << argmax(want, V);
      }
    }
}

}  // namespace

TEST(Generate, FusedStepsEqualTheParallelForwardInF64) {
  for (bool variant : {false, true}) {
    MambaConfig c = small_config(variant);
    auto m = make_model(c, DType::F64);
    check_against_parallel(*m, random_ids(3 * 4, c.vocab_size, 1), 3, 6, DType::F64, true, 1e-10, 1e-10);
  }
}

TEST(Generate, FusedAndReferenceStepsEqualTheParallelForwardInF32) {
  for (bool variant : {false, true}) {
    MambaConfig c = small_config(variant);
    auto m = make_model(c, DType::F32);
    for (bool fused : {true, false})
      check_against_parallel(*m, random_ids(2 * 5, c.vocab_size, 2), 2, 7, DType::F32, fused, 2e-5, 2e-5);
  }
}

TEST(Generate, Bf16EngineTracksTheBf16ParallelForward) {
  MambaConfig c = small_config();
  c.residual_in_fp32 = false;
  c.finalize();
  auto m = make_model(c, DType::F32);
  const std::vector<int64_t> prompt = random_ids(2 * 3, c.vocab_size, 3);
  // bf16 roundings sit where the model stores activations; only summation orders differ.
  StepRun fused = run_engine(*m, prompt, 2, 5, DType::BF16, true);
  StepRun ref = run_engine(*m, prompt, 2, 5, DType::BF16, false);
  for (size_t s = 0; s < fused.logits.size(); ++s)
    EXPECT_LE(test::rel_l2(fused.logits[s], ref.logits[s]), 1e-2) << "step " << s;
}

TEST(Generate, SeededSamplingIsReproducibleAndIndependentOfTheBatch) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F32);
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.sampling.temperature = 0.9;
  o.sampling.top_k = 12;
  o.sampling.top_p = 0.95;
  o.sampling.repetition_penalty = 1.3;
  o.sampling.seed = 5;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5, 6}, {7, 8}};
  const auto a = generate(*m, Device::cpu(), prompts, o);
  EXPECT_EQ(generate(*m, Device::cpu(), prompts, o), a);
  for (const auto& t : a) EXPECT_EQ(t.size(), 10u);
  // Prompt 0 alone (same row id 0) draws the same tokens as in a batch of two.
  EXPECT_EQ(generate(*m, Device::cpu(), {prompts[0]}, o)[0], a[0]);
  // The reference path draws the same tokens from (nearly) the same logits.
  GenerateOptions r = o;
  r.engine.fused = false;
  EXPECT_EQ(generate(*m, Device::cpu(), prompts, r), a);
  GenerateOptions other = o;
  other.sampling.seed = 6;
  EXPECT_NE(generate(*m, Device::cpu(), prompts, other), a);
}

TEST(Generate, PromptsOfDifferentLengthsAreGroupedNotPadded) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F32);
  GenerateOptions o;
  o.max_new_tokens = 6;
  o.sampling.temperature = 0.0;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {9, 8, 7, 6, 5}, {3, 1, 4}, {0}};
  const auto all = generate(*m, Device::cpu(), prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(generate(*m, Device::cpu(), {prompts[i]}, o)[0], all[i]);
}

TEST(Generate, RowsStopAtTheEndOfSequenceTokenAndStreamInOrder) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F32);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling.temperature = 0.7;
  o.sampling.seed = 1;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2}, {3, 4}, {5, 6}};
  const auto full = generate(*m, Device::cpu(), prompts, o);
  // End of sequence: row 0's fourth token.
  const int64_t eos = full[0][3];
  o.eos_token_id = eos;
  o.poll_every = 2;
  std::vector<std::vector<int64_t>> streamed(prompts.size());
  o.on_tokens = [&](size_t i, const std::vector<int64_t>& t) {
    streamed[i].insert(streamed[i].end(), t.begin(), t.end());
  };
  const auto cut = generate(*m, Device::cpu(), prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto end = std::find(full[i].begin(), full[i].end(), eos);
    EXPECT_EQ(cut[i], std::vector<int64_t>(full[i].begin(), end)) << "prompt " << i;
    EXPECT_EQ(streamed[i], cut[i]) << "prompt " << i;
  }
  EXPECT_LE(cut[0].size(), 3u);
}

TEST(Generate, OneNewTokenComesFromThePrefill) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F64);
  GenerateOptions o;
  o.max_new_tokens = 1;
  o.sampling.temperature = 0.0;
  o.compute_dtype = DType::F64;
  const std::vector<int64_t> p = {4, 2, 9};
  const auto t = generate(*m, Device::cpu(), {p}, o);
  const std::vector<double> lg = parallel_logits(*m, p, 1, DType::F64);
  ASSERT_EQ(t[0].size(), 1u);
  EXPECT_EQ(t[0][0], argmax(&lg[2 * c.vocab_size], c.vocab_size));
}

TEST(Generate, TheEngineIsReusableAcrossPrefills) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F32);
  DecodeEngineOptions o;
  o.batch = 2;
  o.max_new_tokens = 5;
  o.sampling.temperature = 0.0;
  DecodeEngine e(*m, Device::cpu(), o);
  const Tensor p1 = Tensor::from_vector_i64({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor p2 = Tensor::from_vector_i64({7, 8, 9, 10}, {2, 2});
  e.prefill(p1, {0, 1});
  e.step(4);
  const auto first = e.tokens(0, 5);
  e.prefill(p2, {0, 1});
  e.step(4);
  const auto second = e.tokens(0, 5);
  DecodeEngine fresh(*m, Device::cpu(), o);
  fresh.prefill(p2, {0, 1});
  fresh.step(4);
  EXPECT_EQ(fresh.tokens(0, 5), second);
  e.prefill(p1, {0, 1});
  e.step(4);
  EXPECT_EQ(e.tokens(0, 5), first);
  EXPECT_NE(test::error_of([&] { e.step(1); }).find("exceed"), std::string::npos);
}

TEST(Generate, BadPromptsAndModelsAreRefusedWithOneClearError) {
  MambaConfig c = small_config();
  auto m = make_model(c, DType::F32);
  GenerateOptions o;
  o.max_new_tokens = 2;
  auto code = [&](const std::vector<std::vector<int64_t>>& prompts) {
    try {
      generate(*m, Device::cpu(), prompts, o);
    } catch (const Error& e) {
      return e.exit_code();
    }
    return 0;
  };
  EXPECT_EQ(code({{1, 2}, {}}), 4);
  EXPECT_EQ(code({{1, c.vocab_size}}), 4);
  EXPECT_EQ(code({{-1}}), 4);
  EXPECT_NE(test::error_of([&] {
              generate(*m, Device::cpu(), {{1}, {2, 99}}, o);
            }).find("prompt 2, token 2: id 99"),
            std::string::npos);
  o.sampling.top_p = 0.0;
  EXPECT_EQ(code({{1}}), 2);
  MambaConfig bc = small_config();
  bc.bidirectional = true;
  bc.finalize();
  auto bm = make_model(bc, DType::F32);
  GenerateOptions ok;
  const std::string err = test::error_of([&] { generate(*bm, Device::cpu(), {{1}}, ok); });
  EXPECT_NE(err.find("bidirectional"), std::string::npos) << err;
  MambaConfig rc = small_config();
  rc.rc_equivariant = true;
  for (int64_t v = 0; v < rc.vocab_size; ++v) rc.rc_complement.push_back(v);
  rc.finalize();
  auto rm = make_model(rc, DType::F32);
  const std::string rc_err = test::error_of([&] { generate(*rm, Device::cpu(), {{1}}, ok); });
  EXPECT_NE(rc_err.find("reverse-complement"), std::string::npos) << rc_err;
}

TEST(Generate, L2PrefetchListKeepsOnlyAlignedNonEmptyRangesUpToItsSize) {
  // The GPU's bulk prefetch takes 16-byte aligned addresses: the list drops what it could not issue.
  alignas(16) static char buf[1024];
  kernels::L2Prefetch pf;
  pf.add(buf + 8, 256);  // unaligned
  pf.add(buf, 8);        // shorter than one 16-byte unit
  pf.add(nullptr, 256);  // no buffer
  EXPECT_EQ(pf.ptr[0], nullptr);
  for (int i = 0; i < kernels::L2Prefetch::kMax + 2; ++i) pf.add(buf + 16 * i, 64 + i);
  for (int i = 0; i < kernels::L2Prefetch::kMax; ++i) {
    EXPECT_EQ(pf.ptr[i], buf + 16 * i) << i;
    EXPECT_EQ(pf.bytes[i], 64 + i) << i;
  }
}
