// Masked language modelling (data/mlm.h, trainer.objective mlm): BERT's masking statistics, its determinism, and
// bidirectional DNA models trained with it through the binary (from a FASTA file and from a token shard, resumed
// bit-exactly); a bidirectional next-token LM is refused.
#include <filesystem>
#include <map>

#include "cli_util.h"
#include "data/dna.h"
#include "data/mlm.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"

using namespace mt;
using test::contains;
using test::run_cli;

namespace {

data::Batch dna_batch(int64_t B, int64_t L) {
  data::Batch b;
  std::vector<int64_t> ids(static_cast<size_t>(B * L));
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t t = i % static_cast<size_t>(L);  // every row the same sequence
    ids[i] = t % 97 == 0 ? data::kDnaEod : data::kDnaA + static_cast<int64_t>(t % 4);
  }
  b.ids = Tensor::from_vector_i64(ids, {B, L});
  b.targets = b.ids.clone();
  return b;
}

data::MlmMasking dna_masking() {
  data::MlmMasking m;
  m.probability = 0.15;
  m.mask_id = data::kDnaVocab;
  m.random_lo = data::kDnaA;
  m.random_hi = data::kDnaN + 1;
  m.keep = {data::kDnaPad, data::kDnaEod};
  return m;
}

std::map<std::string, std::vector<double>> params(const std::string& ckpt) {
  std::map<std::string, std::vector<double>> out;
  for (auto& kv : train::load_checkpoint(ckpt).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first] = kv.second.to_vector();
  return out;
}

}  // namespace

TEST(Mlm, MaskingFollowsBertsRecipe) {
  const int64_t B = 8, L = 5000;
  data::Batch b = dna_batch(B, L);
  const std::vector<int64_t> orig = b.ids.to_vector_i64();
  data::apply_mlm_masking(b, dna_masking(), 7, 1, 100);
  const std::vector<int64_t> ids = b.ids.to_vector_i64(), tg = b.targets.to_vector_i64();
  int64_t eligible = 0, selected = 0, masked = 0, unchanged = 0, random = 0;
  for (size_t i = 0; i < orig.size(); ++i) {
    if (orig[i] == data::kDnaEod) {
      EXPECT_EQ(tg[i], data::kIgnoreIndex);  // document ends are never selected
      EXPECT_EQ(ids[i], orig[i]);
      continue;
    }
    ++eligible;
    if (tg[i] == data::kIgnoreIndex) {
      EXPECT_EQ(ids[i], orig[i]);  // not selected: the input is untouched
      continue;
    }
    ++selected;
    EXPECT_EQ(tg[i], orig[i]);  // scored against the original token, same position
    if (ids[i] == data::kDnaVocab) {
      ++masked;
    } else if (ids[i] == orig[i]) {
      ++unchanged;  // the 10% kept, plus random draws that hit the original
    } else {
      ++random;
      EXPECT_TRUE(ids[i] >= data::kDnaA && ids[i] <= data::kDnaN) << ids[i];
    }
  }
  const double p = static_cast<double>(selected) / static_cast<double>(eligible);
  EXPECT_NEAR(p, 0.15, 0.01);
  EXPECT_NEAR(static_cast<double>(masked) / selected, 0.80, 0.02);
  // Random draws from A C G T N hit the original with probability 1/5: 10% + 2% unchanged, 8% changed.
  EXPECT_NEAR(static_cast<double>(unchanged) / selected, 0.12, 0.02);
  EXPECT_NEAR(static_cast<double>(random) / selected, 0.08, 0.02);
}

TEST(Mlm, MaskingIsAFunctionOfSeedAndSample) {
  data::Batch a = dna_batch(3, 400), b = dna_batch(3, 400), c = dna_batch(3, 400);
  data::apply_mlm_masking(a, dna_masking(), 5, 1, 10);
  data::apply_mlm_masking(b, dna_masking(), 5, 1, 10);
  data::apply_mlm_masking(c, dna_masking(), 5, 1, 11);  // rows shifted by one sample
  EXPECT_EQ(a.ids.to_vector_i64(), b.ids.to_vector_i64());
  EXPECT_EQ(a.targets.to_vector_i64(), b.targets.to_vector_i64());
  // Row 1 of a is sample 11 = row 0 of c.
  const auto ta = a.targets.to_vector_i64(), tc = c.targets.to_vector_i64();
  EXPECT_TRUE(std::equal(ta.begin() + 400, ta.begin() + 800, tc.begin()));
  EXPECT_FALSE(std::equal(ta.begin(), ta.begin() + 400, tc.begin()));
}

TEST(Mlm, BidirectionalDnaModelTrainsAndResumesExactly) {
  const std::string dir = test::temp_dir("mlm");
  const std::string args =
      "train configs/dna-ecoli-pretrain.yaml --set model.bidirectional=true --set trainer.objective=mlm"
      " --set model.d_model=16 --set model.n_layer=1 --set data.seq_len=128 --set trainer.max_steps=6"
      " --set scheduler.warmup_steps=1 --set trainer.eval_every=3 --set trainer.eval_batches=1 --set checkpoint.every=3"
      " --set logging.progress=false --set run.device=cpu --set trainer.precision=fp32 --set run.out_dir=" +
      dir;
  test::CliResult r = run_cli(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "vocab 8,")) << r.out;  // A C G T N, [PAD], [EOD] and the mask token
  EXPECT_TRUE(contains(r.out, "masked LM: 0.15 of the positions, mask id 7")) << r.out;
  EXPECT_TRUE(contains(r.out, "accuracy")) << r.out;
  const auto straight = params(dir + "/checkpoints/" + train::checkpoint_file_name(6));
  std::filesystem::remove_all(dir);
  r = run_cli(args + " --stop-at-step 2");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(params(dir + "/checkpoints/" + train::checkpoint_file_name(6)), straight);
  std::filesystem::remove_all(dir);
}

TEST(Mlm, TrainsOnATokenShard) {
  const std::string dir = test::temp_dir("mlm_shard");
  test::CliResult r =
      run_cli("prepare --tokenizer dna --input data/corpora/ecoli536/NC_008253.fna.gz --output " + dir + "/genome.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("train configs/dna-ecoli-pretrain.yaml --set data.path=" + dir +
              "/genome.bin --set model.bidirectional=true --set trainer.objective=mlm --set model.d_model=16"
              " --set model.n_layer=1 --set data.seq_len=64 --set trainer.max_steps=2 --set scheduler.warmup_steps=1"
              " --set trainer.eval_batches=1 --set logging.progress=false --set run.device=cpu --set run.out_dir=" +
              dir + "/run");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "mask id 7")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(Mlm, RefusedWhereItCannotApply) {
  // The bug this objective fixes: a bidirectional model trained to predict the next token, which it can see.
  test::CliResult r =
      run_cli("train configs/dna-ecoli-pretrain.yaml --set model.bidirectional=true --set run.device=cpu");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "model.bidirectional")) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.objective mlm")) << r.out;
  r = run_cli("train configs/promoters-ecoli.yaml --set trainer.objective=mlm --set run.device=cpu");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.objective")) << r.out;
  r = run_cli(
      "train configs/dna-ecoli-pretrain.yaml --set trainer.objective=mlm --set trainer.chunk_len=64"
      " --set run.device=cpu");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.chunk_len")) << r.out;
}
