// The single-token decode kernels and the decode engine on the GPU against their CPU references: ssm_step (both
// modes), decode_gemv / decode_norm and sampling kernel by kernel in every dtype (CPU references with the same
// storage roundings), then whole generations (per-step logits, greedy tokens, the CUDA graph and PDL paths, the
// cuBLAS path for large batches).
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/allocator.h"
#include "kernels/decode_gemv.h"
#include "kernels/sampling.h"
#include "kernels/ssm_step.h"
#include "nn/generate.h"
#include "test_util.h"

using namespace mt;
using namespace mt::kernels;

namespace {

using Bufs = std::map<std::string, Tensor>;

// The same inputs on the GPU and the CPU: `init` makes the host buffers (inputs; outputs poisoned with NaN), `call`
// runs the kernel on a set of buffers; returns the buffers after the call, on the host.
Bufs run_on(Device dev, const Bufs& host, const std::function<void(Bufs&, bool cuda)>& call) {
  Bufs b;
  for (const auto& kv : host) b[kv.first] = kv.second.to(dev).clone();
  call(b, dev.is_cuda());
  Bufs out;
  for (const auto& kv : b) out[kv.first] = kv.second.to(Device::cpu());
  return out;
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F32).to(dt);
}
Tensor nan_of(const Shape& s, DType dt) { return Tensor::full(s, NAN, dt); }

double atol_of(DType dt) { return dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-5 : 2e-2; }

// Every buffer named in `names`: GPU vs CPU within the dtype's tolerance (NaN never passes).
void compare(const Bufs& gpu, const Bufs& cpu, const std::vector<std::string>& names, DType dt,
             const std::string& what) {
  for (const std::string& n : names) {
    const std::vector<double> a = gpu.at(n).to_vector(), b = cpu.at(n).to_vector();
    const DType bdt = gpu.at(n).dtype();
    const double tol = bdt == DType::F32 && is_half(dt) ? 5e-3 : atol_of(is_half(bdt) ? bdt : dt);
    EXPECT_LE(test::tolerance_ratio(a, b, tol, tol), 1.0) << what << ": " << n << " (" << dtype_name(dt) << ")";
  }
}

const DType kDtypes[] = {DType::F32, DType::BF16, DType::F16};

}  // namespace

TEST(CudaDecode, SsmStepMatchesTheCpuInBothModes) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    const DType sd = dt == DType::F64 ? DType::F64 : DType::F32;
    const int64_t B = 3, D = 300, N = 16, R = 5, E = R + 2 * N, P = 7, K = 4;
    Tensor A = rnd({D, N}, 14, sd).to(DType::F64);
    std::vector<double> av = A.to_vector();
    for (double& a : av) a = -std::exp(a);
    Bufs h{{"uz", rnd({B, 2 * D}, 10, dt)},
           {"xproj", rnd({P, B, E}, 11, sd, 0.3)},
           {"xw", rnd({E, D}, 17, dt, 0.1)},
           {"cw", rnd({D, K}, 18, dt, 0.5)},
           {"cb", rnd({D}, 19, dt)},
           {"cstate", rnd({B, K - 1, D}, 20, dt)},
           {"dt_w", rnd({D, R}, 12, dt, 0.5)},
           {"dt_b", rnd({D}, 13, sd)},
           {"A", Tensor::from_vector(av, {D, N}, sd)},
           {"D", rnd({D}, 15, sd)},
           {"state", rnd({B, D, N}, 16, sd)},
           {"y", nan_of({B, D}, dt)}};
    // Modes: partials with and without z, row mode with and without the conv.
    for (int mode = 0; mode < 4; ++mode) {
      auto call = [&](Bufs& b, bool cuda) {
        SsmStepParams p;
        p.B = B;
        p.D = D;
        p.N = N;
        p.R = R;
        p.dtype = dt;
        p.u = b["uz"].data_ptr();
        p.z = mode != 1 ? static_cast<const char*>(b["uz"].data_ptr()) + D * dtype_size(dt) : nullptr;
        p.ld = 2 * D;
        if (mode < 2) {
          p.xproj = b["xproj"].data_ptr();
          p.P = P;
        } else {
          p.x_proj_w = b["xw"].data_ptr();
          if (mode == 2) {
            p.conv_w = b["cw"].data_ptr();
            p.conv_b = b["cb"].data_ptr();
            p.conv_state = b["cstate"].data_ptr();
            p.K = K;
          }
        }
        p.dt_w = b["dt_w"].data_ptr();
        p.dt_bias = b["dt_b"].data_ptr();
        p.A = b["A"].data_ptr();
        p.D_skip = b["D"].data_ptr();
        p.state = b["state"].data_ptr();
        p.y = b["y"].data_ptr();
        cuda ? ssm_step_cuda(p) : ssm_step_cpu(p);
      };
      compare(run_on(Device::cuda(), h, call), run_on(Device::cpu(), h, call), {"y", "state", "uz", "cstate"}, dt,
              "ssm_step mode " + std::to_string(mode));
    }
  }
}

namespace {

// A decode_gemv MixerIn / Store case: widths that cross the kernel's 16-row blocks (d_inner % 16 = 8, so one block
// holds x and z rows) and its 4-vector stages (in > 32 * 4 * 8 elements for 16-bit types).
struct GemvCase {
  int64_t B, in, di, K = 4, E = 11;
  DType dt;
  bool layernorm, embed;
  Bufs host() const {
    const DType sd = DType::F32;
    Bufs h{{"x", rnd({B, in}, 20, dt)},
           {"emb", rnd({50, in}, 21, dt)},
           {"res_in", rnd({B, in}, 22, sd)},
           {"res_out", nan_of({B, in}, sd)},
           {"nw", rnd({in}, 23, sd)},
           {"nb", rnd({in}, 24, sd)},
           {"W", rnd({2 * di, in}, 25, dt, 1.0 / std::sqrt(static_cast<double>(in)))},
           {"bias", rnd({2 * di}, 26, dt)},
           {"cw", rnd({di, K}, 27, dt, 0.5)},
           {"cb", rnd({di}, 28, dt)},
           {"state", rnd({B, K - 1, di}, 29, dt)},
           {"xw", rnd({E, di}, 30, dt, 0.3)},
           {"xproj", nan_of({decode_xproj_partials(di), B, E}, sd)},
           {"y", nan_of({B, 2 * di}, dt)},
           {"step", Tensor::from_vector_i64({7}, {1})}};
    std::vector<int64_t> toks;
    for (int64_t b = 0; b < B; ++b) toks.push_back((b * 13 + 5) % 50);
    h["tokens"] = Tensor::from_vector_i64(toks, {B});
    return h;
  }
  void call(Bufs& b, bool cuda) const {
    DecodeGemvParams p;
    p.B = B;
    p.in = in;
    p.out = 2 * di;
    p.dtype = dt;
    p.W = b["W"].data_ptr();
    p.bias = b["bias"].data_ptr();
    p.input = embed ? DecodeInput::EmbedNorm : DecodeInput::Norm;
    p.norm.h = b["x"].data_ptr();
    p.norm.embedding = b["emb"].data_ptr();
    p.norm.tokens = b["tokens"].data<int64_t>();
    p.norm.step_counter = b["step"].data<int64_t>();
    p.norm.residual_in = embed ? nullptr : b["res_in"].data_ptr();
    p.norm.residual_out = b["res_out"].data_ptr();
    p.norm.round_residual = is_half(dt);
    p.norm.weight = b["nw"].data_ptr();
    p.norm.bias = layernorm ? b["nb"].data_ptr() : nullptr;
    p.norm.rms = !layernorm;
    p.output = DecodeOutput::MixerIn;
    p.y = b["y"].data_ptr();
    p.d_inner = di;
    p.K = K;
    p.E = E;
    p.conv_w = b["cw"].data_ptr();
    p.conv_b = b["cb"].data_ptr();
    p.conv_state = b["state"].data_ptr();
    p.x_proj_w = b["xw"].data_ptr();
    p.xproj = b["xproj"].data_ptr();
    cuda ? decode_gemv_cuda(p) : decode_gemv_cpu(p);
  }
};

}  // namespace

TEST(CudaDecode, DecodeGemvMixerInMatchesTheCpu) {
  MT_REQUIRE_CUDA();
  for (DType dt : kDtypes)
    for (int64_t B : {1, 2, 3, 5, 8})
      for (int variant = 0; variant < 3; ++variant) {
        GemvCase c{B, variant == 2 ? (dt == DType::F32 ? 528 : 1040) : 48, 40, 4, 11, dt, variant == 1, variant == 0};
        const Bufs h = c.host();
        auto call = [&](Bufs& b, bool cuda) { c.call(b, cuda); };
        const Bufs g = run_on(Device::cuda(), h, call), r = run_on(Device::cpu(), h, call);
        const std::string what = "decode_gemv B " + std::to_string(B) + " in " + std::to_string(c.in) + " variant " +
                                 std::to_string(variant);
        compare(g, r, {"y", "state", "res_out", "xproj"}, dt, what);
        EXPECT_EQ(g.at("step").to_vector_i64()[0], c.embed ? 8 : 7) << what;
      }
}

TEST(CudaDecode, DecodeGemvStoreAndDecodeNormMatchTheCpu) {
  MT_REQUIRE_CUDA();
  for (DType dt : kDtypes)
    for (int64_t B : {1, 4, 7}) {
      const int64_t in = 64, out = 1000;  // out: a partial last block of rows
      Bufs h{{"x", rnd({B, in}, 40, dt)},           {"W", rnd({out, in}, 41, dt, 0.125)},
             {"bias", rnd({out}, 42, dt)},          {"y", nan_of({B, out}, dt)},
             {"y32", nan_of({B, out}, DType::F32)}, {"res", rnd({B, in}, 43, DType::F32)},
             {"nw", rnd({in}, 44, DType::F32)},     {"xin", nan_of({B, in}, dt)}};
      auto call = [&](Bufs& b, bool cuda) {
        DecodeGemvParams p;
        p.B = B;
        p.in = in;
        p.out = out;
        p.dtype = dt;
        p.W = b["W"].data_ptr();
        p.bias = b["bias"].data_ptr();
        p.input = DecodeInput::Plain;
        p.x = b["x"].data_ptr();
        p.y = b["y"].data_ptr();
        cuda ? decode_gemv_cuda(p) : decode_gemv_cpu(p);
        p.bias = nullptr;
        p.input = DecodeInput::Norm;
        p.norm.h = b["x"].data_ptr();
        p.norm.residual_in = b["res"].data_ptr();
        p.norm.weight = b["nw"].data_ptr();
        p.y = b["y32"].data_ptr();
        p.y_compute = true;
        cuda ? decode_gemv_cuda(p) : decode_gemv_cpu(p);
        DecodeNormParams np;
        np.B = B;
        np.H = in;
        np.dtype = dt;
        np.input = DecodeInput::Norm;
        np.norm = p.norm;
        np.y = b["xin"].data_ptr();
        cuda ? decode_norm_cuda(np) : decode_norm_cpu(np);
      };
      compare(run_on(Device::cuda(), h, call), run_on(Device::cpu(), h, call), {"y", "y32", "xin"}, dt,
              "decode_gemv store / decode_norm B " + std::to_string(B));
    }
}

TEST(CudaDecode, SamplingDrawsTheCpusTokens) {
  MT_REQUIRE_CUDA();
  const int64_t B = 6, V = 50280, W = (V + 31) / 32;
  struct Opt {
    float t;
    int64_t k;
    double p;
    float r;
  };
  for (const Opt& o :
       {Opt{0.0f, 0, 1.0, 1.0f}, Opt{0.0f, 0, 1.0, 1.3f}, Opt{1.0f, 0, 1.0, 1.0f}, Opt{0.8f, 40, 1.0, 1.0f},
        Opt{1.2f, 0, 0.9, 1.0f}, Opt{0.7f, 50, 0.8, 1.2f}, Opt{1.0f, 1, 1.0, 1.0f}})
    for (int64_t step = 0; step < 3; ++step) {
      std::vector<double> seen_words(static_cast<size_t>(B * W));
      for (size_t i = 0; i < seen_words.size(); ++i) seen_words[i] = static_cast<double>((i * 2654435761u) % 4096);
      Bufs h{{"logits", rnd({B, V}, 50 + step, DType::F32, 3.0)},
             {"seen", Tensor::from_vector(seen_words, {B, W}, DType::I32)},
             {"rows", Tensor::from_vector_i64({3, 1, 4, 1, 5, 9}, {B})},
             {"step", Tensor::from_vector_i64({step}, {1})},
             {"tokens", Tensor::full({B}, -1, DType::I64)},
             {"hist", Tensor::full({B, 4}, -1, DType::I64)},
             {"scratch", Tensor::zeros({B, 2 * V}, DType::I32)}};
      auto call = [&](Bufs& b, bool cuda) {
        SampleParams p;
        p.B = B;
        p.V = V;
        p.logits = b["logits"].data<float>();
        p.seen = static_cast<uint32_t*>(b["seen"].data_ptr());
        p.seen_words = W;
        p.temperature = o.t;
        p.top_k = o.k;
        p.top_p = o.p;
        p.repetition_penalty = o.r;
        p.seed = 77;
        p.row_ids = b["rows"].data<int64_t>();
        p.step = b["step"].data<int64_t>();
        p.tokens = b["tokens"].data<int64_t>();
        p.history = b["hist"].data<int64_t>();
        p.history_len = 4;
        p.scratch = static_cast<uint32_t*>(b["scratch"].data_ptr());
        cuda ? sample_cuda(p) : sample_cpu(p);
      };
      const Bufs g = run_on(Device::cuda(), h, call), r = run_on(Device::cpu(), h, call);
      const std::string what = "t " + std::to_string(o.t) + " k " + std::to_string(o.k) + " p " + std::to_string(o.p) +
                               " r " + std::to_string(o.r) + " step " + std::to_string(step);
      EXPECT_EQ(g.at("tokens").to_vector_i64(), r.at("tokens").to_vector_i64()) << what;
      EXPECT_EQ(g.at("hist").to_vector_i64(), r.at("hist").to_vector_i64()) << what;
      EXPECT_EQ(g.at("seen").to_vector_i64(), r.at("seen").to_vector_i64()) << what;
    }
}

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
      EXPECT_NE(g.mode.find(B <= 8 ? "gemv kernels" : "cublas projections"), std::string::npos) << what;
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
  const DecodeRun base = decode(*gpu, Device::cuda(), DType::BF16, prompt, 3, 10);
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
  // No allocation happens while the graph is captured or replayed: the cache stays as it was after the first call.
  gpu->to(DType::F32);
  o.compute_dtype = DType::BF16;
  nn::generate(*gpu, Device::cuda(), prompts, o);
  const int64_t before = cuda_memory_stats().num_device_mallocs;
  nn::generate(*gpu, Device::cuda(), prompts, o);
  EXPECT_EQ(cuda_memory_stats().num_device_mallocs, before);
}
