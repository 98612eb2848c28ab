// Mamba model on the tape: initialisation, streaming (step-by-step) equals parallel, masks, bidirectional,
// heads, HF save/load round trip.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <map>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/shape_ops.h"
#include "nn/heads.h"
#include "nn/hf_io.h"
#include "nn/init.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;

namespace {

MambaConfig tiny_config() {
  MambaConfig c;
  c.vocab_size = 29;
  c.d_model = 12;
  c.n_layer = 2;
  c.d_state = 5;
  c.d_conv = 3;
  c.expand = 2;
  c.d_inner = 0;
  c.dt_rank = 0;
  c.finalize();
  return c;
}

Tensor random_ids(int64_t B, int64_t L, int64_t V, uint64_t seed) {
  Generator g(seed);
  return Tensor::randint({B, L}, g, 0, V);
}

std::string temp_dir() {
  char tmpl[] = "/tmp/mt_model_XXXXXX";
  char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

}  // namespace

TEST(Model, InitialisationMatchesReference) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  Generator g(7);
  m.init_parameters(g);
  EXPECT_EQ(check_init_invariants(m.backbone), "");
  for (auto& layer : m.backbone.layers) {
    const MambaMixer& mx = layer->mixer;
    std::vector<double> a = mx.A_log->to_vector();
    for (int64_t d = 0; d < c.d_inner; ++d)
      for (int64_t n = 0; n < c.d_state; ++n) EXPECT_NEAR(a[d * c.d_state + n], std::log(n + 1.0), 1e-6);
    for (double v : mx.D->to_vector()) EXPECT_EQ(v, 1.0);
    std::vector<double> b = mx.dt_proj.bias->to_vector();
    for (double x : b) {
      const double dt = std::log1p(std::exp(x));
      EXPECT_GE(dt, c.dt_min * (1 - 1e-5));
      EXPECT_LE(dt, c.dt_max * (1 + 1e-5));
    }
    const double out_bound = 1.0 / std::sqrt(double(c.d_inner)) / std::sqrt(double(c.n_layer));
    double max_out = 0;
    for (double v : mx.out_proj.weight->to_vector()) max_out = std::max(max_out, std::fabs(v));
    EXPECT_LE(max_out, out_bound);
    EXPECT_GT(max_out, 0.5 * out_bound);  // actually spread over the range, not left at zero
    const double dtw = std::pow(double(c.dt_rank), -0.5);
    for (double v : mx.dt_proj.weight->to_vector()) EXPECT_LE(std::fabs(v), dtw);
  }
  // Embedding ~ N(0, 0.02).
  std::vector<double> e = m.backbone.embeddings.weight->to_vector();
  double var = 0;
  for (double v : e) var += v * v / e.size();
  EXPECT_NEAR(std::sqrt(var), 0.02, 0.004);
}

TEST(Model, ParameterNamesAreHuggingFaces) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  std::vector<std::string> names;
  for (auto& np : m.named_parameters()) names.push_back(np.first);
  EXPECT_EQ(names.front(), "backbone.embeddings.weight");
  EXPECT_EQ(names.back(), "backbone.norm_f.weight");
  for (const char* n : {"backbone.layers.1.norm.weight", "backbone.layers.1.mixer.in_proj.weight",
                        "backbone.layers.1.mixer.conv1d.weight", "backbone.layers.1.mixer.conv1d.bias",
                        "backbone.layers.1.mixer.x_proj.weight", "backbone.layers.1.mixer.dt_proj.weight",
                        "backbone.layers.1.mixer.dt_proj.bias", "backbone.layers.1.mixer.A_log",
                        "backbone.layers.1.mixer.D", "backbone.layers.1.mixer.out_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_EQ(m.num_parameters(), c.num_parameters());
  EXPECT_EQ(m.parameter("backbone.layers.0.mixer.conv1d.weight").shape(), (Shape{c.d_inner, 1, c.d_conv}));
  try {
    m.parameter("backbone.layers.0.mixer.A_lg");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'backbone.layers.0.mixer.A_log'"), std::string::npos)
        << e.what();
  }
}

TEST(Model, StepByStepEqualsParallel) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  Generator g(3);
  m.init_parameters(g);
  m.to(DType::F64);
  const int64_t B = 2, L = 9;
  Tensor ids = random_ids(B, L, c.vocab_size, 11);
  ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  NoGradGuard ng;
  Tensor full = m.forward(ids, fo).logits;
  InferenceCache cache = make_cache(c, B, DType::F64, Device::cpu());
  ForwardOptions so = fo;
  so.cache = &cache;
  std::vector<double> ref = full.to_vector();
  const int64_t V = c.vocab_size;
  // Feed 1 token, then 3 at once, then the rest one by one: chunked streaming must agree too.
  int64_t t = 0;
  for (int64_t chunk : {1, 3, 1, 1, 1, 1, 1}) {
    Tensor step = m.forward(slice(ids, 1, t, t + chunk).contiguous(), so).logits;
    std::vector<double> got = step.to_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < chunk; ++s)
        for (int64_t v = 0; v < V; ++v)
          ASSERT_NEAR(got[(b * chunk + s) * V + v], ref[(b * L + t + s) * V + v], 1e-10)
              << "b " << b << " t " << t + s << " v " << v;
    t += chunk;
  }
  EXPECT_EQ(t, L);
  EXPECT_EQ(cache.position, L);
}

TEST(Model, GradientsOfTheWholeModelPassGradcheck) {
  MambaConfig c = tiny_config();
  c.n_layer = 1;
  c.d_model = 6;
  c.d_state = 3;
  c.finalize();
  MambaLMHeadModel m(c);
  Generator g(5);
  m.init_parameters(g);
  m.to(DType::F64);
  Tensor ids = random_ids(2, 5, c.vocab_size, 2);
  // Check d loss / d (a few parameters) by central differences through the full model.
  for (const char* name : {"backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.dt_proj.bias",
                           "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.norm.weight"}) {
    Tensor& p = m.parameter(name);
    Tensor saved = p;
    auto f = [&](const std::vector<Tensor>& in) {
      p = in[0];
      ForwardOptions fo;
      fo.compute_dtype = DType::F64;
      return m.forward(ids, fo, true).loss;
    };
    GradcheckOptions go;
    go.atol = 1e-7;
    go.rtol = 1e-5;
    auto res = gradcheck(f, {p.clone()}, go);
    p = saved;
    EXPECT_GRADCHECK(res) << name;
  }
}

TEST(Model, ChunkedLossEqualsTheLossOfTheFullLogits) {
  MambaLMHeadModel m(tiny_config());
  Generator g(7);
  m.init_parameters(g);
  m.to(DType::F64);
  Tensor ids = random_ids(3, 9, 29, 8);
  std::vector<int64_t> tv = ids.to_vector_i64();
  tv[4] = tv[13] = tv[26] = kIgnoreIndex;  // ignored positions
  Tensor targets = Tensor::from_vector_i64(tv, {3, 9});
  ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  auto run = [&](bool fused) {
    m.zero_grad();
    LMOutput out = m.forward(ids, fo, fused, targets, /*with_logits=*/!fused);
    Tensor loss = fused ? out.loss : next_token_loss(out.logits, targets);
    if (fused) {
      EXPECT_FALSE(out.logits.defined());
    }
    backward(loss);
    return std::make_pair(loss.item(), grad(m.parameter("backbone.embeddings.weight")).to_vector());
  };
  auto a = run(true), b = run(false);
  EXPECT_NEAR(a.first, b.first, 1e-12);
  ASSERT_EQ(a.second.size(), b.second.size());
  for (size_t i = 0; i < a.second.size(); ++i) EXPECT_NEAR(a.second[i], b.second[i], 1e-12) << i;
}

TEST(Model, PaddingMaskDoesNotChangeRealPositions) {
  MambaConfig c = tiny_config();
  for (const std::string pooling : {"mean", "max", "last", "state"}) {
    MambaForSequenceClassification m(c, 3, pooling);
    Generator g(9);
    m.init_parameters(g);
    ForwardOptions fo;
    NoGradGuard ng;
    Tensor ids = random_ids(1, 6, c.vocab_size, 4);
    Tensor plain = m.forward(ids, fo);
    // The same sequence right-padded with 3 arbitrary tokens and a mask.
    Tensor padded = concat({ids, random_ids(1, 3, c.vocab_size, 99)}, 1);
    ForwardOptions fm;
    fm.mask = Tensor::from_vector({1, 1, 1, 1, 1, 1, 0, 0, 0}, {1, 9});
    Tensor masked = m.forward(padded, fm);
    EXPECT_CLOSE(masked, plain, 1e-5, 1e-4);
  }
}

TEST(Model, BidirectionalSeesTheFuture) {
  MambaConfig c = tiny_config();
  Tensor ids = random_ids(1, 8, c.vocab_size, 5);
  Tensor changed = ids.clone();
  changed.data<int64_t>()[7] = (ids.data<int64_t>()[7] + 1) % c.vocab_size;
  for (bool bidi : {false, true}) {
    c.bidirectional = bidi;
    MambaLMHeadModel m(c);
    Generator g(1);
    m.init_parameters(g);
    NoGradGuard ng;
    ForwardOptions fo;
    std::vector<double> a = m.forward(ids, fo).logits.to_vector(), b = m.forward(changed, fo).logits.to_vector();
    // Position 0's logits: equal for a causal model, different for a bidirectional one.
    double diff = 0;
    for (int64_t v = 0; v < c.vocab_size; ++v) diff = std::max(diff, std::fabs(a[v] - b[v]));
    if (bidi) {
      EXPECT_GT(diff, 1e-6);
    } else {
      EXPECT_EQ(diff, 0.0);
    }
  }
}

// model.residual_in_fp32 false holds the residual stream in the compute dtype (rounded after each block's add); in
// f32 it changes nothing, in bf16 the residual a block hands on is a bf16 value and the model's output moves.
TEST(Model, ResidualInFp32FalseRoundsTheResidualStream) {
  Tensor ids = random_ids(2, 7, 29, 6);
  std::map<std::pair<bool, DType>, std::vector<double>> hidden;
  for (bool in_fp32 : {true, false}) {
    MambaConfig c = tiny_config();
    c.residual_in_fp32 = in_fp32;
    MambaBackbone m(c);
    Generator g(3);
    m.init_parameters(g);
    NoGradGuard ng;
    for (DType cd : {DType::F32, DType::BF16}) {
      ForwardOptions fo;
      fo.compute_dtype = cd;
      hidden[{in_fp32, cd}] = m.forward(ids, fo).last_hidden_state.to(DType::F64).to_vector();
      Generator hg(11);
      const Tensor h = Tensor::randn({2, 7, c.d_model}, hg, 0.0, 1.0, cd);
      const Tensor res = Tensor::randn({2, 7, c.d_model}, hg, 0.0, 1.0, DType::F32);
      const Tensor r = m.layers[0]->forward(h, res, fo, nullptr, nullptr).second;
      const bool representable = r.to_vector() == r.to(DType::BF16).to(DType::F32).to_vector();
      EXPECT_EQ(representable, !in_fp32 && cd == DType::BF16)
          << "residual_in_fp32 " << in_fp32 << " " << dtype_name(cd);
    }
  }
  EXPECT_EQ(hidden[std::make_pair(true, DType::F32)], hidden[std::make_pair(false, DType::F32)]);
  EXPECT_NE(hidden[std::make_pair(true, DType::BF16)], hidden[std::make_pair(false, DType::BF16)]);
}

TEST(Model, HuggingFaceDirectoryRoundTrip) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  Generator g(8);
  m.init_parameters(g);
  const std::string dir = temp_dir();
  save_hf_model(m, dir);
  auto loaded = load_hf_model(dir);
  EXPECT_EQ(check_init_invariants(loaded->backbone), "");  // dt bias survives the round trip untouched
  for (auto& np : m.named_parameters())
    EXPECT_EQ(loaded->parameter(np.first).to_vector(), np.second->to_vector()) << np.first;
  Tensor ids = random_ids(2, 4, c.vocab_size, 1);
  NoGradGuard ng;
  ForwardOptions fo;
  EXPECT_CLOSE(loaded->forward(ids, fo).logits, m.forward(ids, fo).logits, 1e-12, 0.0);
  std::system(("rm -rf " + dir).c_str());
}

TEST(Model, LoadRejectsMismatchedWeights) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  auto sd = m.state_dict();
  sd["backbone.layers.0.mixer.A_log"] = Tensor::zeros({c.d_inner, c.d_state + 1});
  try {
    m.load_state_dict(sd, true, "x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Checkpoint);
    EXPECT_NE(std::string(e.what()).find("size mismatch for backbone.layers.0.mixer.A_log"), std::string::npos)
        << e.what();
  }
  sd = m.state_dict();
  sd["backbone.layers.0.mixer.A_logg"] = sd["backbone.layers.0.mixer.A_log"];
  EXPECT_THROW(m.load_state_dict(sd, true), Error);
  sd = m.state_dict();
  sd.erase("backbone.norm_f.weight");
  try {
    m.load_state_dict(sd, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'backbone.norm_f.weight'"), std::string::npos) << e.what();
  }
}

TEST(Model, LoadsOriginalStateSpacesNamesAndAnUntiedCopyOfTheHead) {
  MambaConfig c = tiny_config();
  MambaLMHeadModel m(c);
  Generator g(12);
  m.init_parameters(g);
  const std::string dir = temp_dir();
  save_hf_model(m, dir);
  // Rewrite the weights the way state-spaces' files name them, with a (tied, redundant) lm_head.weight.
  auto sd = m.state_dict();
  sd["backbone.embedding.weight"] = sd["backbone.embeddings.weight"];
  sd["lm_head.weight"] = sd["backbone.embeddings.weight"];
  sd.erase("backbone.embeddings.weight");
  save_safetensors(dir + "/model.safetensors", sd);
  auto loaded = load_hf_model(dir);
  EXPECT_EQ(loaded->parameter("backbone.embeddings.weight").to_vector(), m.backbone.embeddings.weight->to_vector());
  // Both spellings at once is ambiguous: refused.
  sd["backbone.embeddings.weight"] = sd["backbone.embedding.weight"];
  save_safetensors(dir + "/model.safetensors", sd);
  EXPECT_THROW(load_hf_model(dir), Error);
  // A missing weights file names the path.
  std::remove((dir + "/model.safetensors").c_str());
  try {
    load_hf_model(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Checkpoint);
    EXPECT_NE(std::string(e.what()).find(dir + "/model.safetensors"), std::string::npos) << e.what();
  }
  std::system(("rm -rf " + dir).c_str());
}

TEST(Model, TokenClassificationHeadShapesAndGradients) {
  MambaConfig c = tiny_config();
  MambaForTokenClassification m(c, 4);
  Generator g(2);
  m.init_parameters(g);
  Tensor ids = random_ids(2, 5, c.vocab_size, 3);
  ForwardOptions fo;
  Tensor logits = m.forward(ids, fo);
  EXPECT_EQ(logits.shape(), (Shape{2, 5, 4}));
  Tensor labels = Tensor::from_vector_i64({0, 1, 2, 3, kIgnoreIndex, 3, 2, 1, 0, 1}, {10});
  backward(cross_entropy(reshape(logits, {10, 4}), labels, kIgnoreIndex));
  for (auto& np : m.named_parameters()) {
    ASSERT_TRUE(grad(*np.second).defined()) << np.first;
    double s = 0;
    for (double v : grad(*np.second).to_vector()) s += std::fabs(v);
    EXPECT_GT(s, 0.0) << np.first;
  }
}
