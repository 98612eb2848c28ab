// Training like a fine-tuning user (issue 24 sections 2 and 3) through the binary: runs measured in epochs, warmup as
// a ratio, the best checkpoints by an evaluation metric, early stopping, export --best.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "nn/hf_io.h"
#include "nn/safetensors.h"
#include "run_util.h"
#include "test_util.h"
#include "train/best.h"
#include "train/ckpt/checkpoint.h"
#include "train/init_from.h"

using namespace mt;
using test::ckpt;
using test::contains;
using test::read_jsonl;
using test::read_text;
using test::run_cli;
using test::small_lm_args;

namespace {

// A labelled TSV of n rows: texts of a's are class 1, of b's class 0.
std::string tiny_tsv(const std::string& dir, int n, int classes = 2) {
  const std::string path = dir + (classes == 2 ? "/rows.tsv" : "/rows" + std::to_string(classes) + ".tsv");
  std::ofstream f(path);
  f << "sentence\tlabel\n";
  for (int i = 0; i < n; ++i) f << std::string(3 + i % 5, i % 2 ? 'a' : 'b') << "\t" << i % classes << "\n";
  return path;
}

std::string classify_args(const std::string& dir, const std::string& tsv) {
  return "train configs/sst2.yaml --set run.out_dir=" + dir + " --set data.path=" + tsv +
         " --set data.val_path= --set data.val_fraction=0.1 --set model.d_model=16 --set model.n_layer=1"
         " --set trainer.micro_batch_size=4 --set trainer.global_batch_size=8 --set trainer.log_every=1"
         " --set trainer.eval_every=0 --set scheduler.warmup_steps=0 --set logging.progress=false"
         " --set logging.plot=false --set run.device=cpu";
}

std::set<std::string> checkpoint_files(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/checkpoints")) {
    const std::string n = e.path().filename().string();
    if (train::checkpoint_step_from_name(n) >= 0) out.insert(n);
  }
  return out;
}

}  // namespace

TEST(FineTune, EpochsGiveTheLengthAndTheEpochIsShownAndRecorded) {
  const std::string dir = test::temp_dir("epochs");
  const std::string tsv = tiny_tsv(dir, 40);  // 36 training rows, 4 held out
  test::CliResult r = run_cli(classify_args(dir + "/run", tsv) + " --set trainer.max_steps=0 --set trainer.epochs=2" +
                              " --set scheduler.warmup_ratio=0.25");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, ", 9 steps (2 epochs of 36 samples)")) << r.out;  // ceil(2 * 36 / 8)
  EXPECT_TRUE(contains(r.out, "step 9/9 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "epoch 2.00")) << r.out;
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir + "/run", 9)), "");
  int train_records = 0;
  for (const auto& j : read_jsonl(dir + "/run/metrics.jsonl")) {
    ASSERT_TRUE(j.contains("epoch")) << j.dump();
    if (!j.contains("loss")) continue;
    ++train_records;
    EXPECT_DOUBLE_EQ(j["epoch"].get<double>(), j["samples_seen"].get<double>() / 36.0) << j.dump();
    // warmup_ratio 0.25 of 9 steps = 2 warmup steps: the first step runs at half the peak LR (0.002).
    const double want_lr = j["step"] == 1 ? 0.001 : j["step"] == 2 ? 0.002 : -1;
    if (want_lr > 0) {
      EXPECT_DOUBLE_EQ(j["lr"].get<double>(), want_lr) << j.dump();
    }
  }
  EXPECT_EQ(train_records, 9);
  // Text: an epoch is the training split's windows of seq_len tokens.
  r = run_cli(small_lm_args(dir + "/lm", 0) + " --set trainer.epochs=0.001 --set scheduler.warmup_steps=1 " +
              "--set trainer.eval_every=0 --set logging.plot=false");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, ", 4 steps (0.001 epochs of 31370 samples)")) << r.out;  // 1003855 tokens / 32
  // The length is one of the two; the warmup too; an endless source has no epochs.
  r = run_cli(classify_args(dir + "/bad", tsv) + " --set trainer.max_steps=5 --set trainer.epochs=2");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "set trainer.max_steps or trainer.epochs, not both")) << r.out;
  r = run_cli(classify_args(dir + "/bad", tsv) + " --set scheduler.warmup_steps=2 --set scheduler.warmup_ratio=0.1");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "--set scheduler.warmup_ratio: set scheduler.warmup_steps or scheduler.warmup_ratio, "
                       "not both"))
      << r.out;
  r = run_cli("train configs/selective_copying.yaml --set trainer.epochs=1 --set trainer.max_steps=0");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.epochs needs data of a finite size")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(FineTune, BestTrackerRanksKeepsAndCounts) {
  train::BestTracker t("eval.loss", "auto", 2);
  EXPECT_TRUE(t.minimize());
  EXPECT_TRUE(t.update(10, 3.0));
  EXPECT_TRUE(t.improved());
  EXPECT_TRUE(t.update(20, 2.0));
  EXPECT_FALSE(t.update(30, 3.5));  // worse than both kept
  EXPECT_EQ(t.evals_since_best(), 1);
  EXPECT_TRUE(t.update(40, 2.5));  // second best: kept, not a new best
  EXPECT_FALSE(t.improved());
  EXPECT_EQ(t.evals_since_best(), 2);
  EXPECT_EQ(t.steps(), (std::vector<int64_t>{20, 40}));
  EXPECT_FALSE(t.update(50, std::nan("")));  // NaN never ranks
  EXPECT_EQ(t.evals_since_best(), 3);
  train::BestTracker u("eval.loss", "auto", 1);
  EXPECT_TRUE(u.restore(t.state()));  // trimmed to its keep_best
  EXPECT_EQ(u.steps(), (std::vector<int64_t>{20}));
  EXPECT_EQ(u.evals_since_best(), 3);
  train::BestTracker other("eval.mcc", "auto", 1);
  EXPECT_FALSE(other.minimize());
  EXPECT_FALSE(other.restore(t.state()));  // another monitor starts afresh
  EXPECT_TRUE(train::monitor_minimizes("eval.bits_per_byte", "auto"));
  EXPECT_FALSE(train::monitor_minimizes("eval.loss", "max"));
  EXPECT_TRUE(std::isnan(other.value_of({{"mcc", nullptr}})));  // undefined this time: never ranks
  const std::string e = test::error_of([&] { other.value_of({{"loss", 1.0}, {"accuracy", 0.5}}); });
  EXPECT_EQ(e,
            "checkpoint.monitor: 'eval.mcc' is not a number of this task's evaluation record (it has: eval.accuracy, "
            "eval.loss)");
}

TEST(FineTune, BestCheckpointsSurviveRetentionAcrossAResume) {
  // Evaluations every 2 steps rank by eval.loss; the best 2 are kept beside the newest (keep_last 1) and `best`
  // names the lowest. A run stopped at step 4 and resumed keeps the same ranking as the straight one.
  const std::string straight = test::temp_dir("best_a"), resumed = test::temp_dir("best_b");
  auto args = [](const std::string& d) {
    return small_lm_args(d, 8) +
           " --set trainer.eval_every=2 --set checkpoint.every=100 --set checkpoint.keep_last=1"
           " --set checkpoint.monitor=eval.loss --set checkpoint.keep_best=2 --set logging.plot=false";
  };
  test::CliResult r = run_cli(args(straight));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(args(resumed) + " --stop-at-step 4");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(args(resumed));
  ASSERT_EQ(r.code, 0) << r.out;
  // The expected ranking, from the evaluation records.
  std::vector<std::pair<double, int64_t>> evals;
  for (const auto& j : read_jsonl(straight + "/metrics.jsonl"))
    if (j.contains("eval")) evals.emplace_back(j["eval"]["loss"].get<double>(), j["step"].get<int64_t>());
  ASSERT_EQ(evals.size(), 4u);
  std::stable_sort(evals.begin(), evals.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const std::set<std::string> want = {train::checkpoint_file_name(evals[0].second),
                                      train::checkpoint_file_name(evals[1].second), train::checkpoint_file_name(8)};
  for (const std::string& d : {straight, resumed}) {
    EXPECT_EQ(checkpoint_files(d), want) << d;
    EXPECT_EQ(read_text(d + "/checkpoints/best"), train::checkpoint_file_name(evals[0].second) + "\n") << d;
    EXPECT_EQ(train::best_checkpoint(d), ckpt(d, evals[0].second));
  }
  EXPECT_TRUE(contains(r.out, "best eval.loss: ")) << r.out;
  // export --best writes the weights of the best checkpoint.
  r = run_cli("export " + resumed + " --best --hf " + resumed + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "exported " + ckpt(resumed, evals[0].second))) << r.out;
  // A run without a monitor has no best checkpoint.
  const std::string plain = test::temp_dir("best_none");
  std::filesystem::create_directories(plain + "/checkpoints");
  r = run_cli("export " + plain + " --best --hf " + plain + "/hf");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: no best checkpoint in '" + plain +
                                  "/checkpoints': the run had no checkpoint.monitor"))
      << r.out;
  r = run_cli("evaluate " + plain + " --best --data x.txt");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: no best checkpoint in '" + plain + "/checkpoints'")) << r.out;
  // A monitor the task does not report is refused before training, naming what it has.
  r = run_cli(small_lm_args(plain + "/x", 4) + " --set checkpoint.monitor=eval.mcc");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "checkpoint.monitor: 'eval.mcc' is not a number of this task's evaluation record (it "
                       "has: eval.bits_per_byte, eval.bits_per_token, eval.loss, eval.n, eval.perplexity)"))
      << r.out;
  for (const std::string& d : {straight, resumed, plain}) std::filesystem::remove_all(d);
}

TEST(FineTune, EarlyStoppingStopsAndStaysStopped) {
  // eval.n (the tokens scored) is the same number at every evaluation: with mode max only the first is a best, so each
  // later evaluation counts towards the patience, deterministically.
  const std::string dir = test::temp_dir("early");
  const std::string args = small_lm_args(dir, 40) +
                           " --set trainer.eval_every=2 --set checkpoint.monitor=eval.n"
                           " --set checkpoint.monitor_mode=max --set logging.plot=false";
  test::CliResult r = run_cli(args + " --set trainer.early_stop_patience=2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "stopped early at step 6: eval.n did not improve in 2 evaluations")) << r.out;
  EXPECT_EQ(train::verify_checkpoint(ckpt(dir, 6)), "");
  EXPECT_EQ(read_text(dir + "/checkpoints/best"), train::checkpoint_file_name(2) + "\n");
  bool recorded = false;
  for (const auto& j : read_jsonl(dir + "/metrics.jsonl"))
    recorded = recorded || (j.value("event", "") == "early_stop" && j["step"] == 6 && j["best_step"] == 2);
  EXPECT_TRUE(recorded);
  // The same command again: nothing to do.
  r = run_cli(args + " --set trainer.early_stop_patience=2");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "the run stopped early at step 6: ")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(ckpt(dir, 8)));
  // More patience: it goes on until that runs out too.
  r = run_cli(args + " --set trainer.early_stop_patience=4");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "stopped early at step 10: ")) << r.out;
  r = run_cli(args + " --set trainer.early_stop_patience=2 --set checkpoint.monitor=");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "trainer.early_stop_patience needs checkpoint.monitor")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(FineTune, FrozenBackboneAndTheHeadsOwnLearningRate) {
  // One step with the backbone frozen: its weights stay the initial ones bit for bit, and the classifier moves by
  // the head's learning rate. head_lr 1e-30 leaves the initial classifier too (the update rounds away), so the
  // first Adam step's update (about lr per weight) of head_lr = 2 lr is twice that of head_lr = lr.
  const std::string dir = test::temp_dir("frozen");
  const std::string tsv = tiny_tsv(dir, 40);
  auto step_one = [&](const std::string& name, const std::string& head_lr) {
    const std::string out = dir + "/" + name;
    const test::CliResult r = run_cli(classify_args(out, tsv) + " --set trainer.max_steps=1" +
                                      " --set trainer.freeze_backbone_steps=1 --set optimizer.lr=0.01" +
                                      " --set scheduler.min_lr=0 --set optimizer.head_lr=" + head_lr);
    EXPECT_EQ(r.code, 0) << r.out;
    return train::load_checkpoint(ckpt(out, 1)).tensors;
  };
  auto init = step_one("init", "1e-30"), one = step_one("one", "0.01"), two = step_one("two", "0.02");
  int backbone = 0;
  for (auto& kv : init) {
    if (kv.first.rfind("model/backbone.", 0) != 0) continue;
    ++backbone;
    EXPECT_EQ(kv.second.to_vector(), one.at(kv.first).to_vector()) << kv.first;
    EXPECT_EQ(kv.second.to_vector(), two.at(kv.first).to_vector()) << kv.first;
  }
  EXPECT_GT(backbone, 5);
  const auto w0 = init.at("model/classifier.weight").to_vector(), w1 = one.at("model/classifier.weight").to_vector(),
             w2 = two.at("model/classifier.weight").to_vector();
  ASSERT_EQ(w0.size(), w1.size());
  double moved = 0;
  for (size_t i = 0; i < w0.size(); ++i) {
    moved += std::abs(w1[i] - w0[i]);
    EXPECT_NEAR(w2[i] - w0[i], 2 * (w1[i] - w0[i]), 1e-6) << i;
  }
  EXPECT_GT(moved / static_cast<double>(w0.size()), 0.005);  // about lr = 0.01 per weight
  std::filesystem::remove_all(dir);
}

namespace {

// A small LM written as a HuggingFace directory, its tensors in `dtype`, in model.safetensors or split over `shards`
// files listed by model.safetensors.index.json. Returns the tensors as written.
std::map<std::string, Tensor> write_hf_lm(const std::string& dir, MambaConfig mc, DType dtype, int shards) {
  mc.d_inner = mc.dt_rank = 0;
  mc.finalize();
  nn::MambaLMHeadModel m(mc);
  Generator g(11);
  m.init_parameters(g);
  std::map<std::string, Tensor> sd;
  for (auto& kv : m.state_dict()) sd[kv.first] = kv.second.to(dtype);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config_to_hf_json(mc);
  if (shards == 1) {
    save_safetensors(dir + "/model.safetensors", sd);
    return sd;
  }
  std::vector<std::map<std::string, Tensor>> parts(static_cast<size_t>(shards));
  nlohmann::json map = nlohmann::json::object();
  int k = 0;
  for (auto& kv : sd) {
    const int part = k++ % shards;
    parts[static_cast<size_t>(part)][kv.first] = kv.second;
    map[kv.first] = "model-0000" + std::to_string(part + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
  }
  for (int p = 0; p < shards; ++p)
    save_safetensors(dir + "/model-0000" + std::to_string(p + 1) + "-of-0000" + std::to_string(shards) + ".safetensors",
                     parts[static_cast<size_t>(p)]);
  std::ofstream(dir + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2);
  return sd;
}

MambaConfig small_lm_config(int64_t vocab, int64_t d_model, int64_t n_layer) {
  MambaConfig mc;
  mc.vocab_size = vocab;
  mc.d_model = d_model;
  mc.n_layer = n_layer;
  mc.d_state = 16;
  return mc;
}

void expect_close_tensors(const std::map<std::string, Tensor>& want, const std::map<std::string, Tensor>& got,
                          const std::string& got_prefix) {
  ASSERT_FALSE(want.empty());
  for (auto& kv : want) {
    auto it = got.find(got_prefix + kv.first);
    ASSERT_NE(it, got.end()) << kv.first;
    const auto a = kv.second.to_vector(), b = it->second.to_vector();
    ASSERT_EQ(a.size(), b.size()) << kv.first;
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-20) << kv.first << "[" << i << "]";
  }
}

// A YAML config with no model dimensions: they come from model.init_from. One step at a learning rate too small to
// move any weight (and zero weights by at most 1e-30), so the checkpoint shows what was loaded.
std::string from_source_config(const std::string& dir, const std::string& init_from) {
  const std::string path = dir + "/ft.yaml";
  std::ofstream(path) << "run:\n  name: ft\n  out_dir: " << dir
                      << "/run\n  device: cpu\nmodel:\n  init_from: " << init_from
                      << "\ndata:\n  kind: text\n  path: data/corpora/tinyshakespeare.txt\n  seq_len: 32\n"
                         "optimizer:\n  lr: 1e-30\nscheduler:\n  min_lr: 0\n"
                         "trainer:\n  max_steps: 1\n  micro_batch_size: 4\n  global_batch_size: 4\n"
                         "  eval_batches: 1\n  log_every: 1\nlogging:\n  progress: false\n  plot: false\n";
  return path;
}

}  // namespace

TEST(FineTune, InitFromAShardedBf16HuggingFaceDirectory) {
  const std::string dir = test::temp_dir("init_hf");
  const auto written = write_hf_lm(dir + "/hf", small_lm_config(256, 16, 2), DType::BF16, 3);
  test::CliResult r = run_cli("train " + from_source_config(dir, dir + "/hf"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "model.init_from: HuggingFace directory '" + dir + "/hf'")) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "  loaded 22 tensors: backbone.embeddings.weight, backbone.layers.*.norm.weight (x2), "
                       "backbone.layers.*.mixer.in_proj.weight (x2),"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "model: d_model 16, 2 layers, d_state 16, vocab 256")) << r.out;
  EXPECT_TRUE(contains(read_text(dir + "/run/config.yaml"), "  d_model: 16\n"));
  expect_close_tensors(written, train::load_checkpoint(ckpt(dir + "/run", 1)).tensors, "model/");
  // Every --hf reader reads the same layouts: forward's loader gives the same weights.
  auto model = nn::load_hf_model(dir + "/hf");
  std::map<std::string, Tensor> loaded;
  for (auto& np : model->named_parameters()) loaded[np.first] = *np.second;
  expect_close_tensors(written, loaded, "");
  // Model keys given must agree with the source, named one by one.
  r = run_cli("train " + from_source_config(dir, dir + "/hf") + " --set model.d_model=32 --set model.d_state=16" +
              " --set model.n_layer=3");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: " + dir +
                                  "/ft.yaml:6:3: model.init_from: the model keys given "
                                  "disagree with HuggingFace directory '" +
                                  dir +
                                  "/hf': model.d_model: 32 here, 16 in the source; model.n_layer: 3 here, 2 in "
                                  "the source (leave them out"))
      << r.out;
  // A damaged index is refused naming the file and the tensor.
  std::filesystem::rename(dir + "/hf/model-00002-of-00003.safetensors", dir + "/hf/gone.safetensors");
  EXPECT_TRUE(contains(test::error_of([&] { nn::load_hf_weights(dir + "/hf"); }),
                       dir + "/hf/model-00002-of-00003.safetensors"));
  std::filesystem::rename(dir + "/hf/gone.safetensors", dir + "/hf/model-00002-of-00003.safetensors");
  save_safetensors(dir + "/hf/model-00001-of-00003.safetensors", {{"extra", Tensor::zeros({2}, DType::F32)}});
  EXPECT_TRUE(contains(test::error_of([&] { nn::load_hf_weights(dir + "/hf"); }), "which does not hold it"));
  std::filesystem::remove_all(dir);
}

TEST(FineTune, InitFromARunOrACheckpointLoadsTheHeadWhenItFits) {
  const std::string dir = test::temp_dir("init_run");
  const std::string tsv = tiny_tsv(dir, 40);
  test::CliResult r = run_cli(classify_args(dir + "/a", tsv) + " --set trainer.max_steps=2");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string still = " --set trainer.max_steps=1 --set optimizer.lr=1e-30 --set scheduler.min_lr=0";
  // From the run directory (its newest checkpoint): backbone and classifier.
  r = run_cli(classify_args(dir + "/b", tsv) + still + " --set model.init_from=" + dir + "/a");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "model.init_from: checkpoint '" + ckpt(dir + "/a", 2) + "' (step 2)")) << r.out;
  EXPECT_TRUE(contains(r.out, "backbone.norm_f.weight, classifier.weight, classifier.bias\n")) << r.out;
  EXPECT_FALSE(contains(r.out, "new (initialised here)")) << r.out;
  std::map<std::string, Tensor> a_model;
  for (auto& kv : train::load_checkpoint(ckpt(dir + "/a", 2)).tensors)
    if (kv.first.rfind("model/", 0) == 0) a_model[kv.first.substr(6)] = kv.second;
  expect_close_tensors(a_model, train::load_checkpoint(ckpt(dir + "/b", 1)).tensors, "model/");
  // From the checkpoint file, with other labels or another pooling: the backbone only.
  r = run_cli(classify_args(dir + "/c", tiny_tsv(dir, 60, 3)) + still +
              " --set model.num_classes=3 --set model.init_from=" + ckpt(dir + "/a", 2));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "new (initialised here): classifier.weight, classifier.bias (the source's classifier."))
      << r.out;
  EXPECT_TRUE(contains(r.out, "other labels")) << r.out;
  EXPECT_TRUE(contains(r.out, "unused from the source: classifier.bias, classifier.weight")) << r.out;
  r = run_cli(classify_args(dir + "/d", tsv) + still + " --set model.pooling=max --set model.init_from=" + dir + "/a");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "(the source's classifier pools by mean, this model by max)")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(FineTune, ClassificationWithTheBpeTokenizerExtendsAPretrainedEmbedding) {
  // A pretrained LM with the published Mamba vocabulary (50280 rows) under a classifier fed by the shipped GPT-NeoX
  // tokenizer (50281 ids): the embedding grows to 50288 rows (a multiple of 8), the new rows drawn like the
  // embedding's initialisation (normal, std 0.02).
  const std::string dir = test::temp_dir("init_bpe");
  const auto written = write_hf_lm(dir + "/hf", small_lm_config(50280, 16, 1), DType::F16, 1);
  const std::string tsv = tiny_tsv(dir, 40);
  test::CliResult r = run_cli(classify_args(dir + "/run", tsv) +
                              " --set tokenizer.kind=bpe --set data.seq_len=16 --set trainer.max_steps=1"
                              " --set optimizer.lr=1e-30 --set scheduler.min_lr=0 --set model.init_from=" +
                              dir + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "extended: backbone.embeddings.weight 50280 -> 50288 rows")) << r.out;
  EXPECT_TRUE(contains(r.out, "vocab 50288,")) << r.out;
  EXPECT_TRUE(contains(r.out, "new (initialised here): classifier.weight, classifier.bias\n")) << r.out;
  const auto ck = train::load_checkpoint(ckpt(dir + "/run", 1)).tensors;
  const auto emb = ck.at("model/backbone.embeddings.weight").to_vector();
  const auto src = written.at("backbone.embeddings.weight").to_vector();
  ASSERT_EQ(emb.size(), 50288u * 16u);
  for (size_t i = 0; i < src.size(); ++i) ASSERT_NEAR(emb[i], src[i], 1e-20) << i;
  double sq = 0;
  for (size_t i = src.size(); i < emb.size(); ++i) sq += emb[i] * emb[i];
  const double std = std::sqrt(sq / static_cast<double>(emb.size() - src.size()));
  EXPECT_GT(std, 0.01);
  EXPECT_LT(std, 0.04);
  // predict reads the rows with the run's BPE tokenizer; the export carries tokenizer.json and predicts the same.
  r = run_cli("predict " + dir + "/run --input " + tsv + " --out " + dir + "/p.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "40 rows (0 bad rows skipped")) << r.out;
  r = run_cli("export " + dir + "/run --hf " + dir + "/x");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/x/tokenizer.json"));
  r = run_cli("predict --hf " + dir + "/x --input " + tsv + " --out " + dir + "/px.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string predicted = test::read_bytes(dir + "/p.jsonl");
  EXPECT_EQ(std::count(predicted.begin(), predicted.end(), '\n'), 40);
  EXPECT_EQ(test::read_bytes(dir + "/px.jsonl"), predicted);
  // The embedding can grow, not shrink.
  r = run_cli(classify_args(dir + "/run2", tsv) + " --set tokenizer.kind=bpe --set model.vocab_size=50000" +
              " --set model.init_from=" + dir + "/hf");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "model.vocab_size: 50000 here, 50280 in the source (the embedding can grow, not shrink)"))
      << r.out;
  std::filesystem::remove_all(dir);
}

TEST(FineTune, AClassifierExportsHeadLoadsOnlyUnderItsPooling) {
  // An export's config.json states its pooling (mamba_train.pooling); a head trained under another pooling reads
  // other features and starts fresh.
  const std::string dir = test::temp_dir("init_pool");
  MambaConfig mc = small_lm_config(256, 16, 1);
  mc.finalize();
  nn::MambaForSequenceClassification a(mc, 2, "mean");
  Generator g(5);
  a.init_parameters(g);
  std::filesystem::create_directories(dir + "/export");
  nlohmann::json cfg = nlohmann::json::parse(config_to_hf_json(mc));
  cfg["num_labels"] = 2;
  cfg["mamba_train"] = {{"head", "sequence_classification"}, {"pooling", "max"}};
  std::ofstream(dir + "/export/config.json") << cfg.dump(2);
  save_safetensors(dir + "/export/model.safetensors", a.state_dict());
  const train::InitSource src = train::inspect_init_source(dir + "/export");
  EXPECT_EQ(src.kind, "hf");
  EXPECT_EQ(src.pooling, "max");
  nn::MambaForSequenceClassification under_max(mc, 2, "max"), under_mean(mc, 2, "mean");
  Generator g2(6), g3(6);
  under_max.init_parameters(g2);
  under_mean.init_parameters(g3);
  train::InitReport r = train::apply_init_tensors(under_max, train::load_init_tensors(src), src, "max");
  EXPECT_TRUE(r.fresh.empty());
  EXPECT_EQ(under_max.classifier.weight->to_vector(), a.classifier.weight->to_vector());
  r = train::apply_init_tensors(under_mean, train::load_init_tensors(src), src, "mean");
  EXPECT_EQ(r.fresh, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  EXPECT_EQ(r.note, "the source's classifier pools by max, this model by mean");
  EXPECT_NE(under_mean.classifier.weight->to_vector(), a.classifier.weight->to_vector());
  EXPECT_EQ(under_mean.backbone.norm_f.weight->to_vector(), a.backbone.norm_f.weight->to_vector());
  std::filesystem::remove_all(dir);
}
