// Genomics workflows: a fixed held-out split while the seed varies the model (data.split_seed).
#include <filesystem>

#include "autograd/ops/shape_ops.h"
#include "cli_util.h"
#include "nn/heads.h"
#include "test_util.h"
#include "train/config/config.h"
#include "train/task_data.h"

using namespace mt;
using namespace mt::train;

namespace {

TrainConfig promoters(uint64_t seed, int64_t split_seed) {
  return load_train_config_file(test::source_path("configs/promoters-ecoli.yaml"),
                                {"run.seed=" + std::to_string(seed), "data.split_seed=" + std::to_string(split_seed)});
}

std::vector<int64_t> val_labels(const TrainConfig& c) {
  auto t = make_task_data(c);
  std::vector<int64_t> out;
  for (int64_t k = 0; k < t->num_val_batches(16); ++k) {
    const auto l = t->val_batch(k, 16).labels.to_vector_i64();
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

}  // namespace

TEST(Genomics, SplitSeedKeepsTheHeldOutSplitWhileTheRunSeedVaries) {
  const std::string cwd = std::filesystem::current_path().string();
  std::filesystem::current_path(MT_SOURCE_DIR);  // the config names the shipped FASTA files relative to the root
  const auto a = val_labels(promoters(1, 7)), b = val_labels(promoters(2, 7)), c = val_labels(promoters(2, -1)),
             d = val_labels(promoters(2, 2));
  std::filesystem::current_path(cwd);
  EXPECT_EQ(a, b);  // same split_seed: the same held-out rows in the same order
  EXPECT_NE(a, c);  // -1: the split follows run.seed
  EXPECT_EQ(c, d);
}

namespace {

nn::ForwardOptions f64() {
  nn::ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  return fo;
}

MambaConfig rc_config(bool bidirectional) {
  MambaConfig c;
  c.vocab_size = 8;  // PAD EOD A C G T N MASK
  c.d_model = 6;
  c.n_layer = 2;
  c.d_state = 3;
  c.d_conv = 3;
  c.bidirectional = bidirectional;
  c.rc_equivariant = true;
  c.rc_complement = {0, 1, 5, 4, 3, 2, 6, 7};
  c.finalize();
  return c;
}

// Reverse complement of [B, L] DNA ids.
Tensor reverse_complement(const Tensor& ids, const MambaConfig& c) {
  std::vector<int64_t> v = ids.to_vector_i64();
  const int64_t B = ids.size(0), L = ids.size(1);
  std::vector<int64_t> out(v.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) out[b * L + t] = c.rc_complement[v[b * L + L - 1 - t]];
  return Tensor::from_vector_i64(out, {B, L});
}

}  // namespace

TEST(Genomics, RcEquivariantOutputOfTheReverseComplementIsTheReverseComplementOfTheOutput) {
  for (bool bidi : {false, true}) {
    const MambaConfig c = rc_config(bidi);
    nn::MambaLMHeadModel m(c);
    Generator g(2);
    m.init_parameters(g);
    m.to(DType::F64);
    Generator ig(3);
    const Tensor x = Tensor::randint({2, 11}, ig, 2, 7);  // A C G T N
    NoGradGuard ng;
    const nn::LMOutput a = m.forward(x, f64()), b = m.forward(reverse_complement(x, c), f64());
    // Hidden: [B, L, 2d]; the rc's output reversed in positions and channels is the original's.
    EXPECT_EQ(a.backbone.last_hidden_state.size(2), 2 * c.d_model);
    EXPECT_CLOSE(flip(flip(b.backbone.last_hidden_state, 1), 2), a.backbone.last_hidden_state, 1e-12, 1e-10);
    // Logits: position t of rc(x) scores token v as position L-1-t of x scores comp(v).
    const auto la = a.logits.to_vector(), lb = b.logits.to_vector();
    const int64_t L = 11, V = 8;
    for (int64_t bb = 0; bb < 2; ++bb)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t v = 0; v < V; ++v)
          ASSERT_NEAR(lb[(bb * L + t) * V + v], la[(bb * L + L - 1 - t) * V + c.rc_complement[v]], 1e-10)
              << "bidirectional " << bidi << " t " << t << " v " << v;
  }
}

TEST(Genomics, RcEquivariantClassifierGivesASequenceAndItsReverseComplementOnePrediction) {
  const MambaConfig c = rc_config(true);
  for (const char* pooling : {"mean", "max"}) {
    nn::MambaForSequenceClassification m(c, 2, pooling);
    Generator g(4);
    m.init_parameters(g);
    m.to(DType::F64);
    Generator ig(5);
    const Tensor x = Tensor::randint({3, 9}, ig, 2, 7);
    NoGradGuard ng;
    SCOPED_TRACE(pooling);
    EXPECT_CLOSE(m.forward(reverse_complement(x, c), f64()), m.forward(x, f64()), 1e-12, 1e-10);
  }
  const std::string last = test::error_of([&] { nn::MambaForSequenceClassification(c, 2, "last"); });
  EXPECT_NE(last.find("mean or max"), std::string::npos) << last;
}

TEST(Genomics, RcEquivariantGradientsPassGradcheck) {
  MambaConfig c = rc_config(true);
  c.n_layer = 1;
  nn::MambaForSequenceClassification m(c, 2, "mean");
  Generator g(6);
  m.init_parameters(g);
  m.to(DType::F64);
  Generator ig(7);
  const Tensor x = Tensor::randint({2, 5}, ig, 2, 7);
  for (const char* name : {"backbone.embeddings.weight", "backbone.layers.0.mixer.reverse.A_log"}) {
    Tensor& p = m.parameter(name);
    Tensor saved = p;
    auto f = [&](const std::vector<Tensor>& in) {
      p = in[0];
      return m.forward(x, f64());
    };
    GradcheckOptions go;
    go.atol = 1e-7;
    go.rtol = 1e-5;
    auto res = gradcheck(f, {p.clone()}, go);
    p = saved;
    EXPECT_GRADCHECK(res) << name;
  }
}

TEST(Genomics, RcEquivariantConfigsAndRefusals) {
  const std::string cwd = std::filesystem::current_path().string();
  std::filesystem::current_path(MT_SOURCE_DIR);
  const TrainConfig c = load_train_config_file("configs/promoters-ecoli.yaml", {"model.rc_equivariant=true"});
  EXPECT_EQ(c.model.mamba.rc_complement, (std::vector<int64_t>{0, 1, 5, 4, 3, 2, 6}));
  const MambaConfig back = config_from_hf_json(config_to_hf_json(c.model.mamba), "round trip");
  EXPECT_TRUE(back.rc_equivariant);
  EXPECT_EQ(back.rc_complement, c.model.mamba.rc_complement);
  const std::string clm =
      test::error_of([] { load_train_config_file("configs/dna-ecoli-pretrain.yaml", {"model.rc_equivariant=true"}); });
  const std::string bytes =
      test::error_of([] { load_train_config_file("configs/sst2.yaml", {"model.rc_equivariant=true"}); });
  std::filesystem::current_path(cwd);
  EXPECT_NE(clm.find("trainer.objective mlm"), std::string::npos) << clm;
  EXPECT_NE(bytes.find("tokenizer.kind dna"), std::string::npos) << bytes;
}

TEST(Genomics, RcEquivariantPromoterClassifierTrains) {
  const std::string dir = test::temp_dir("rc_promoters");
  const test::CliResult r = test::run_cli(
      "train configs/promoters-ecoli.yaml --set model.rc_equivariant=true --set data.rc_augment=false"
      " --set model.d_model=16 --set model.n_layer=1 --set trainer.max_steps=3 --set scheduler.warmup_steps=1"
      " --set trainer.eval_batches=1 --set logging.progress=false --set run.device=cpu --set run.out_dir=" +
      dir);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(test::contains(r.out, "eval step 3")) << r.out;
  std::filesystem::remove_all(dir);
}
