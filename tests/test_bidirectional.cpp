// Bidirectional layers: Caduceus' BiMamba (the reverse direction with its own conv, x_proj, dt_proj, A_log and D,
// in_proj and out_proj shared) against the two directions assembled by hand; names, counts, gradients; and the
// shared-weight variant of older checkpoints and exports.
#include "autograd/ops/elementwise.h"
#include "autograd/ops/shape_ops.h"
#include "nn/heads.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;

namespace {

MambaConfig bi_config(BiWeights w) {
  MambaConfig c;
  c.vocab_size = 7;
  c.d_model = 8;
  c.n_layer = 2;
  c.d_state = 3;
  c.d_conv = 3;
  c.bidirectional = true;
  c.bidirectional_weights = w;
  c.finalize();
  return c;
}

void copy_param(Module& dst, const std::string& dname, const Module& src, const std::string& sname) {
  NoGradGuard ng;
  dst.parameter(dname).copy_(src.parameter(sname));
}

}  // namespace

TEST(Bidirectional, CaduceusHasItsOwnReverseWeights) {
  MambaConfig c = bi_config(BiWeights::Caduceus);
  MambaBackbone m(c);
  int64_t n = 0;
  bool has_reverse = false;
  for (auto& kv : m.named_parameters()) {
    n += kv.second->numel();
    has_reverse = has_reverse || kv.first == "layers.1.mixer.reverse.dt_proj.bias";
  }
  EXPECT_TRUE(has_reverse);
  MambaLMHeadModel lm(c);
  EXPECT_EQ(lm.num_parameters(), c.num_parameters());
  MambaConfig s = bi_config(BiWeights::Shared);
  MambaLMHeadModel shared(s);
  EXPECT_EQ(shared.num_parameters(), s.num_parameters());
  // Per layer the reverse direction adds conv (di K + di), x_proj ((R + 2N) di), dt_proj (di R + di), A_log, D.
  const int64_t di = c.d_inner, K = c.d_conv, R = c.dt_rank, N = c.d_state;
  EXPECT_EQ(c.num_parameters() - s.num_parameters(),
            c.n_layer * (di * K + di + (R + 2 * N) * di + di * R + di + di * N + di));
}

TEST(Bidirectional, CaduceusMixerIsForwardPlusFlippedReverse) {
  MambaConfig c = bi_config(BiWeights::Caduceus);
  MambaMixer bi(c);
  Generator g(3);
  bi.init_parameters(g, c.n_layer);
  MambaConfig uc = c;
  uc.bidirectional = false;
  MambaMixer fwd(uc), rev(uc);
  for (const char* p : {"in_proj.weight", "out_proj.weight"}) {
    copy_param(fwd, p, bi, p);
    copy_param(rev, p, bi, p);
  }
  for (const char* p :
       {"conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"}) {
    copy_param(fwd, p, bi, p);
    copy_param(rev, p, bi, std::string("reverse.") + p);
  }
  bi.to(DType::F64);
  fwd.to(DType::F64);
  rev.to(DType::F64);
  Generator hg(9);
  Tensor h = Tensor::randn({2, 6, c.d_model}, hg, 0.0, 1.0, DType::F64);
  ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  NoGradGuard ng;
  Tensor want = add(fwd.forward(h, fo, nullptr, nullptr), flip(rev.forward(flip(h, 1), fo, nullptr, nullptr), 1));
  EXPECT_CLOSE(bi.forward(h, fo, nullptr, nullptr), want, 1e-12, 1e-10);
}

TEST(Bidirectional, CaduceusGradientsPassGradcheck) {
  MambaConfig c = bi_config(BiWeights::Caduceus);
  c.n_layer = 1;
  MambaForSequenceClassification m(c, 2, "mean");
  Generator g(5);
  m.init_parameters(g);
  m.to(DType::F64);
  Generator ig(4);
  Tensor ids = Tensor::randint({2, 5}, ig, 0, 7);
  for (const char* name : {"backbone.layers.0.mixer.reverse.A_log", "backbone.layers.0.mixer.reverse.conv1d.weight",
                           "backbone.layers.0.mixer.reverse.dt_proj.bias"}) {
    Tensor& p = m.parameter(name);
    Tensor saved = p;
    auto f = [&](const std::vector<Tensor>& in) {
      p = in[0];
      ForwardOptions fo;
      fo.compute_dtype = DType::F64;
      return m.forward(ids, fo);
    };
    GradcheckOptions go;
    go.atol = 1e-7;
    go.rtol = 1e-5;
    auto res = gradcheck(f, {p.clone()}, go);
    p = saved;
    EXPECT_GRADCHECK(res) << name;
  }
}

TEST(Bidirectional, OlderConfigsWithoutTheKeyAreSharedAndNewOnesSayWhich) {
  const MambaConfig old = config_from_hf_json(
      R"({"model_type": "mamba", "hidden_size": 8, "vocab_size": 7, "num_hidden_layers": 1, "state_size": 3,
          "mamba_train_bidirectional": true})",
      "old");
  EXPECT_TRUE(old.bidirectional);
  EXPECT_EQ(old.bidirectional_weights, BiWeights::Shared);
  for (BiWeights w : {BiWeights::Caduceus, BiWeights::Shared}) {
    const MambaConfig back = config_from_hf_json(config_to_hf_json(bi_config(w)), "round trip");
    EXPECT_EQ(back.bidirectional_weights, w);
  }
}
