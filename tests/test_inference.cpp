// Using trained models (train/inference.h, `mamba-train evaluate / predict / export`): metrics equal to those computed
// from predict's output, probabilities, output formats, features, export round trips (bit for bit), string labels in
// the checkpoint, language-model windows and bytes, and bad inputs as one error line with the documented exit code.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "cli_util.h"
#include "data/dna.h"
#include "data/row_stream.h"
#include "nn/hf_io.h"
#include "nn/safetensors.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/hdf5_io.h"
#include "train/inference.h"
#include "train/metrics.h"
#include "train/outputs.h"

using namespace mt;
using test::contains;
using test::run_cli;

namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Short reviews whose label is a word: "neg" / "pos" (string labels), n rows, deterministic.
std::string reviews_csv(int n, int seed) {
  const char* good[] = {"great", "lovely", "fine", "superb"};
  const char* bad[] = {"awful", "dull", "poor", "bad"};
  std::string s = "review,sentiment\n";
  for (int i = 0; i < n; ++i) {
    const bool pos = (i * 7 + seed) % 3 != 0;
    const char* w = pos ? good[(i + seed) % 4] : bad[(i * 3 + seed) % 4];
    s += str("\"a ", w, " film, \"\"really\"\" ", w, "\",", pos ? "pos" : "neg", "\n");
  }
  return s;
}

// A tiny classifier trained a few steps on reviews_csv (validation: the test file).
struct ClassifierRun {
  std::string dir, train_csv, test_csv;
};

ClassifierRun train_classifier(const std::string& tag) {
  ClassifierRun r;
  r.dir = test::temp_dir(tag);
  r.train_csv = r.dir + "/train.csv";
  r.test_csv = r.dir + "/test.csv";
  test::write_bytes(r.train_csv, reviews_csv(48, 1));
  test::write_bytes(r.test_csv, reviews_csv(21, 2));
  const test::CliResult t = run_cli(
      "train configs/sst2.yaml --set run.out_dir=" + r.dir +
      "/run --set data.format=csv --set data.path=" + r.train_csv + " --set data.val_path=" + r.test_csv +
      " --set data.text_column=review --set data.label_column=sentiment --set data.seq_len=32"
      " --set model.d_model=16 --set model.n_layer=1 --set trainer.max_steps=6 --set scheduler.warmup_steps=1"
      " --set trainer.micro_batch_size=8 --set trainer.global_batch_size=8 --set trainer.eval_every=3"
      " --set trainer.eval_batches=0 --set checkpoint.every=0 --set logging.progress=false --set run.device=cpu");
  EXPECT_EQ(t.code, 0) << t.out;
  // The evaluation line names the number of rows: the whole test file (eval_batches 0).
  EXPECT_TRUE(contains(t.out, "eval step 6: loss ")) << t.out;
  EXPECT_TRUE(contains(t.out, "  n=21")) << t.out;
  return r;
}

// The truth of a reviews file, as class indices of (neg, pos).
std::vector<int64_t> truth_of(const std::string& csv) {
  std::vector<int64_t> t;
  for (const std::string& l : lines_of(csv))
    if (l.size() > 4 && l.compare(l.size() - 4, 4, ",pos") == 0)
      t.push_back(1);
    else if (l.size() > 4 && l.compare(l.size() - 4, 4, ",neg") == 0)
      t.push_back(0);
  return t;
}

// DNA records, 24 per class, into DIR/a.fa (class 0) and DIR/b.fa (class 1); returns b.fa's text.
std::string write_two_class_fasta(const std::string& dir) {
  std::string a, b;
  for (int i = 0; i < 24; ++i) {
    a += str(">a", i, "\n", std::string(static_cast<size_t>(8 + i % 5), "ACGT"[i % 4]), "AAAA\n");
    b += str(">b", i, "\n", std::string(static_cast<size_t>(8 + i % 3), "ACGT"[(i + 1) % 4]), "TTTT\n");
  }
  test::write_bytes(dir + "/a.fa", a);
  test::write_bytes(dir + "/b.fa", b);
  return b;
}

std::vector<std::string> json_keys(const nlohmann::ordered_json& j) {
  std::vector<std::string> k;
  for (auto it = j.begin(); it != j.end(); ++it) k.push_back(it.key());
  return k;
}

}  // namespace

TEST(Inference, ClassifierEvaluateEqualsMetricsOfPredictAndExportIsBitExact) {
  const ClassifierRun run = train_classifier("infer_cls");
  const std::string& d = run.dir;
  // The checkpoint keeps the class names found in the data (sorted) for evaluate / predict / export.
  const std::string ckpt = train::resolve_checkpoint(d + "/run");
  EXPECT_EQ(train::load_checkpoint(ckpt).strings.at("label_names"), "[\"neg\",\"pos\"]");
  // Evaluation during training: the same metrics as evaluate, plus the loss.
  const std::vector<std::string> metrics = lines_of(d + "/run/metrics.jsonl");
  const nlohmann::json last = nlohmann::json::parse(metrics.back());
  for (const char* k :
       {"loss", "accuracy", "f1", "f1_macro", "per_class", "mcc", "confusion", "roc_auc", "pr_auc", "n"})
    EXPECT_TRUE(last["eval"].contains(k)) << k << ": " << metrics.back();
  EXPECT_FALSE(last["eval"].contains("perplexity")) << metrics.back();
  EXPECT_EQ(last["eval"]["n"], 21);

  test::CliResult r = run_cli("evaluate " + d + "/run --data " + run.test_csv + " --out " + d + "/eval.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "21 rows (0 bad rows skipped, 0 truncated)")) << r.out;
  EXPECT_TRUE(contains(r.out, "confusion (rows: true class, columns: predicted)")) << r.out;
  const nlohmann::ordered_json ev = nlohmann::ordered_json::parse(test::read_bytes(d + "/eval.json"));
  EXPECT_EQ(json_keys(ev), (std::vector<std::string>{"accuracy", "f1", "f1_macro", "per_class", "mcc", "confusion",
                                                     "roc_auc", "pr_auc", "n"}));
  EXPECT_EQ(ev["n"], 21);
  EXPECT_EQ(ev["per_class"][1]["label"], "pos");
  // The same numbers as the final evaluation of training (same rows, same code; the trainer batches them alike).
  EXPECT_EQ(ev["confusion"].dump(), last["eval"]["confusion"].dump());

  // predict: one row per input row, in order, probabilities summing to 1, predicted = the most probable class.
  r = run_cli("predict " + d + "/run --input " + run.test_csv + " --out " + d + "/p.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::string> rows = lines_of(d + "/p.jsonl");
  ASSERT_EQ(rows.size(), 21u);
  struct stat st {};
  ASSERT_EQ(::stat((d + "/p.jsonl").c_str(), &st), 0);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 0777, 0644 & ~mask);  // published like any file the user writes, not 0600
  const std::vector<int64_t> truth = truth_of(run.test_csv);
  ASSERT_EQ(truth.size(), 21u);
  train::ClassificationEvaluator from_predict({"neg", "pos"});
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::ordered_json j = nlohmann::ordered_json::parse(rows[i]);
    EXPECT_EQ(json_keys(j), (std::vector<std::string>{"row", "predicted", "probs"})) << rows[i];
    EXPECT_EQ(j["row"], static_cast<int64_t>(i));
    EXPECT_EQ(json_keys(j["probs"]), (std::vector<std::string>{"neg", "pos"}));
    const double p[2] = {j["probs"]["neg"].get<double>(), j["probs"]["pos"].get<double>()};
    EXPECT_NEAR(p[0] + p[1], 1.0, 1e-12);
    EXPECT_EQ(j["predicted"], p[1] > p[0] ? "pos" : "neg");
    from_predict.add(p, truth[i]);
  }
  // evaluate's numbers are those computed from predict's output, to the last bit.
  EXPECT_EQ(train::to_json(from_predict.report()).dump(), ev.dump());

  // CSV: the same probabilities.
  r = run_cli("predict " + d + "/run --input " + run.test_csv + " --out " + d + "/p.csv");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::string> csv = lines_of(d + "/p.csv");
  ASSERT_EQ(csv.size(), 22u);
  EXPECT_EQ(csv[0], "row,predicted,prob_neg,prob_pos");
  const nlohmann::json j3 = nlohmann::json::parse(rows[3]);
  EXPECT_EQ(csv[4], str("3,", j3["predicted"].get<std::string>(), ",", train::shortest_double(j3["probs"]["neg"]), ",",
                        train::shortest_double(j3["probs"]["pos"])));

  // An existing output is not replaced without --force.
  const std::string before = test::read_bytes(d + "/p.jsonl");
  r = run_cli("predict " + d + "/run --input " + run.test_csv + " --out " + d + "/p.jsonl");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --out " + d + "/p.jsonl: the file exists (--force replaces it)"))
      << r.out;
  EXPECT_EQ(test::read_bytes(d + "/p.jsonl"), before);

  // Export: backbone + head, labels, data settings, tokenizer; predictions from it equal the checkpoint's bit for bit.
  r = run_cli("export " + d + "/run --hf " + d + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json cfg = nlohmann::json::parse(test::read_bytes(d + "/hf/config.json"));
  EXPECT_EQ(cfg["num_labels"], 2);
  EXPECT_EQ(cfg["id2label"].dump(), "{\"0\":\"neg\",\"1\":\"pos\"}");
  EXPECT_EQ(cfg["label2id"].dump(), "{\"neg\":0,\"pos\":1}");
  EXPECT_EQ(cfg["mamba_train"]["head"], "sequence_classification");
  EXPECT_EQ(cfg["mamba_train"]["pooling"], "mean");
  EXPECT_EQ(cfg["mamba_train"]["batch_size"], 8);  // the run's micro-batch: --hf batches as the run directory does
  EXPECT_EQ(cfg["mamba_train"]["head_tensors"].dump(), "[\"classifier.weight\",\"classifier.bias\"]");
  EXPECT_EQ(cfg["mamba_train"]["data"]["text_column"], "review");
  EXPECT_EQ(cfg["mamba_train"]["data"]["seq_len"], 32);
  EXPECT_FALSE(cfg["mamba_train"]["data"].contains("path"));
  EXPECT_EQ(test::read_bytes(d + "/hf/mamba_tokenizer.json"), "{\"kind\":\"byte\"}\n");
  const auto tensors = load_safetensors(d + "/hf/model.safetensors");
  EXPECT_EQ(tensors.at("classifier.weight").shape(), (Shape{2, 16}));
  EXPECT_EQ(tensors.at("classifier.bias").shape(), (Shape{2}));
  r = run_cli("predict --hf " + d + "/hf --input " + run.test_csv + " --out " + d + "/p_hf.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(test::read_bytes(d + "/p_hf.jsonl"), test::read_bytes(d + "/p.jsonl"));
  r = run_cli("evaluate --hf " + d + "/hf --data " + run.test_csv + " --out " + d + "/eval_hf.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(test::read_bytes(d + "/eval_hf.json"), test::read_bytes(d + "/eval.json"));
  // A damaged batch size is refused naming the key.
  {
    nlohmann::json bad = cfg;
    bad["mamba_train"]["batch_size"] = 0;
    test::write_bytes(d + "/hf/config.json", bad.dump(2));
    r = run_cli("predict --hf " + d + "/hf --input " + run.test_csv + " --out " + d + "/p_bad.jsonl");
    EXPECT_EQ(r.code, 5) << r.out;
    EXPECT_TRUE(contains(r.out, "mamba_train.batch_size is not a positive integer")) << r.out;
    test::write_bytes(d + "/hf/config.json", cfg.dump(2));
  }
  // bf16 weights: half the bytes, and they still run.
  r = run_cli("export " + d + "/run --hf " + d + "/hf16 --dtype bf16");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(load_safetensors(d + "/hf16/model.safetensors").at("classifier.weight").dtype(), DType::BF16);
  r = run_cli("predict --hf " + d + "/hf16 --input " + run.test_csv + " --out " + d + "/p16.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(lines_of(d + "/p16.jsonl").size(), 21u);

  // model.init_from takes the export (its backbone under a new classifier).
  r = run_cli("train configs/sst2.yaml --set run.out_dir=" + d +
              "/ft --set data.format=csv --set data.path=" + run.train_csv + " --set data.val_path=" + run.test_csv +
              " --set data.text_column=review --set data.label_column=sentiment --set data.seq_len=32"
              " --set model.d_model=16 --set model.n_layer=1 --set trainer.max_steps=1 --set scheduler.warmup_steps=0"
              " --set optimizer.lr=1e-9 --set scheduler.min_lr=0 --set trainer.micro_batch_size=8"
              " --set trainer.global_batch_size=8 --set logging.progress=false --set run.device=cpu"
              " --set model.init_from=" +
              d + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto ft = train::load_checkpoint(train::resolve_checkpoint(d + "/ft")).tensors;
  EXPECT_LE(test::rel_l2(ft.at("model/backbone.layers.0.mixer.in_proj.weight").to_vector(),
                         tensors.at("backbone.layers.0.mixer.in_proj.weight").to_vector()),
            1e-6);
  std::filesystem::remove_all(d);
}

TEST(Inference, EmbeddingsArePooledOrPerTokenHiddenStates) {
  const ClassifierRun run = train_classifier("infer_emb");
  const std::string& d = run.dir;
  test::CliResult r = run_cli("predict " + d + "/run --input " + run.test_csv + " --embeddings " + d + "/pooled.h5");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("predict " + d + "/run --input " + run.test_csv + " --embeddings " + d + "/tokens.h5 --per-token");
  ASSERT_EQ(r.code, 0) << r.out;
  Shape ps, hs, os, rs;
  const std::vector<double> pooled = train::read_h5_dataset(d + "/pooled.h5", "pooled", &ps);
  const std::vector<double> row = train::read_h5_dataset(d + "/pooled.h5", "row", &rs);
  const std::vector<double> hidden = train::read_h5_dataset(d + "/tokens.h5", "hidden", &hs);
  const std::vector<double> offsets = train::read_h5_dataset(d + "/tokens.h5", "offsets", &os);
  EXPECT_EQ(ps, (Shape{21, 16}));
  EXPECT_EQ(rs, (Shape{21}));
  EXPECT_EQ(os, (Shape{22}));
  EXPECT_EQ(row[20], 20.0);
  EXPECT_EQ(offsets[0], 0.0);
  ASSERT_EQ(hs.size(), 2u);
  EXPECT_EQ(hs[1], 16);
  EXPECT_EQ(static_cast<double>(hs[0]), offsets[21]);
  // Row 0 holds the bytes of the first review; the mean of its hidden states is its pooled vector (mean pooling).
  std::vector<std::string> texts;
  data::RowSpec spec;
  spec.format = "csv";
  spec.text_column = "review";
  spec.labels = false;
  data::stream_rows(run.test_csv, spec, [&](data::Row& row) { texts.push_back(row.text); });
  ASSERT_EQ(texts.size(), 21u);
  const int64_t len = static_cast<int64_t>(texts[0].size());
  EXPECT_EQ(offsets[1], static_cast<double>(len));
  for (int64_t k = 0; k < 16; ++k) {
    double mean = 0;
    for (int64_t t = 0; t < len; ++t) mean += hidden[static_cast<size_t>(t * 16 + k)] / static_cast<double>(len);
    EXPECT_NEAR(mean, pooled[static_cast<size_t>(k)], 1e-5) << k;
  }
  std::filesystem::remove_all(d);
}

TEST(Inference, LanguageModelEvaluateScoresNonOverlappingWindows) {
  // A random byte-level LM as an export directory; the file is 45 bytes: windows of 16 at 0, 16 and a last one of 13
  // tokens, scoring 15 + 15 + 12 = 42 next-byte predictions.
  const std::string d = test::temp_dir("infer_lm");
  nn::MambaLMHeadModel model(test::tiny_config(16, 1));
  Generator g(3);
  model.init_parameters(g);
  nn::save_hf_model(model, d + "/hf");
  test::write_bytes(d + "/hf/mamba_tokenizer.json", "{\"kind\": \"byte\"}\n");
  const std::string text = "To be, or not to be: that is the question.\nOK";
  ASSERT_EQ(text.size(), 45u);
  test::write_bytes(d + "/t.txt", text);
  test::CliResult r =
      run_cli("evaluate --hf " + d + "/hf --data " + d + "/t.txt --set data.seq_len=16 --out " + d + "/e.json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json e = nlohmann::json::parse(test::read_bytes(d + "/e.json"));
  EXPECT_EQ(e["n"], 42);
  // The same windows by hand.
  double nats = 0;
  for (int64_t start : {0, 16, 32}) {
    const int64_t len = std::min<int64_t>(16, 45 - start);
    std::vector<int64_t> ids;
    for (int64_t t = 0; t < len; ++t) ids.push_back(static_cast<unsigned char>(text[static_cast<size_t>(start + t)]));
    NoGradGuard ng;
    const Tensor x = Tensor::from_vector_i64(ids, {1, len});
    nats += model.forward(x, nn::ForwardOptions{}, true).loss.item() * static_cast<double>(len - 1);
  }
  EXPECT_NEAR(e["loss"].get<double>(), nats / 42.0, 1e-6);
  EXPECT_NEAR(e["perplexity"].get<double>(), std::exp(nats / 42.0), 1e-4);
  EXPECT_NEAR(e["bits_per_token"].get<double>(), nats / 42.0 / std::log(2.0), 1e-6);
  EXPECT_NEAR(e["bits_per_byte"].get<double>(), e["bits_per_token"].get<double>(), 1e-12);  // a byte per token
  // Its features: one pooled vector per line (2 lines), mean pooling.
  r = run_cli("predict --hf " + d + "/hf --input " + d + "/t.txt --embeddings " + d + "/f.h5");
  ASSERT_EQ(r.code, 0) << r.out;
  Shape s;
  train::read_h5_dataset(d + "/f.h5", "pooled", &s);
  EXPECT_EQ(s, (Shape{2, 16}));
  // A language model has no classes: predict --out is refused (a model of the wrong kind).
  r = run_cli("predict --hf " + d + "/hf --input " + d + "/t.txt --out " + d + "/p.jsonl");
  EXPECT_EQ(r.code, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: exported model " + d + "/hf is a language model")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(d + "/p.jsonl"));
  // A masked-LM export (mamba_train.objective mlm) is not scored as a next-token model.
  nlohmann::json cfg = nlohmann::json::parse(test::read_bytes(d + "/hf/config.json"));
  cfg["mamba_train"] = {{"head", "lm"}, {"objective", "mlm"}};
  test::write_bytes(d + "/hf/config.json", cfg.dump());
  r = run_cli("evaluate --hf " + d + "/hf --data " + d + "/t.txt");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: evaluate: the model was trained with trainer.objective mlm"))
      << r.out;
  std::filesystem::remove_all(d);
}

TEST(Inference, TokenTextBytes) {
  train::TrainConfig c;
  c.tokenizer.kind = "byte";
  EXPECT_EQ(train::token_text_bytes(c), std::vector<int32_t>(256, 1));
  c.tokenizer.kind = "dna";
  const std::vector<int32_t> dna = train::token_text_bytes(c);
  EXPECT_EQ(dna, (std::vector<int32_t>{0, 0, 1, 1, 1, 1, 1}));  // [PAD] [EOD] A C G T N
  EXPECT_EQ(dna[data::kDnaEod], 0);
  c.tokenizer.kind = "bpe";
  c.tokenizer.path = test::source_path("data/tokenizers/gpt-neox-20b/tokenizer.json");
  const std::vector<int32_t> bpe = train::token_text_bytes(c);
  ASSERT_EQ(bpe.size(), 50281u);
  EXPECT_EQ(bpe[0], 0);    // <|endoftext|>: added by the data after each document, no text
  EXPECT_EQ(bpe[253], 4);  // " the"
  EXPECT_EQ(bpe[783], 3);  // "the"
  c.data.kind = "selective_copying";
  EXPECT_TRUE(train::token_text_bytes(c).empty());
}

TEST(Inference, BadInputsAreOneClearErrorWithItsExitCode) {
  const ClassifierRun run = train_classifier("infer_bad");
  const std::string& d = run.dir;
  auto one_error = [](const test::CliResult& r, int code, const std::string& msg) {
    EXPECT_EQ(r.code, code) << r.out;
    EXPECT_TRUE(contains(r.out, "mamba-train: error: " + msg)) << r.out;
    size_t n = 0;
    for (size_t p = r.out.find("mamba-train: error:"); p != std::string::npos;
         p = r.out.find("mamba-train: error:", p + 1))
      ++n;
    EXPECT_EQ(n, 1u) << r.out;
  };
  // A missing input file (exit 4), a missing run (5), a file that is not a checkpoint (5).
  one_error(run_cli("predict " + d + "/run --input " + d + "/nope.csv --out " + d + "/x.jsonl"), 4,
            d + "/nope.csv: cannot open: No such file or directory");
  EXPECT_FALSE(std::filesystem::exists(d + "/x.jsonl"));  // nothing written
  one_error(run_cli("evaluate " + d + "/missing --data " + run.test_csv), 5,
            "no such checkpoint or run directory '" + d + "/missing'");
  one_error(run_cli("evaluate " + run.test_csv + " --data " + run.test_csv), 5, "checkpoint '" + run.test_csv + "'");
  // Unreadable rows: a wrong field count names file:line, or is skipped with data.bad_rows: skip (its row index stays
  // unused); a label that is not one of the classes.
  test::write_bytes(d + "/bad.csv",
                    "review,sentiment\n\"a fine film\",pos\nnot,enough,fields,here\n\"a dull film\",neg\n");
  one_error(run_cli("predict " + d + "/run --input " + d + "/bad.csv --out " + d + "/x.jsonl"), 4,
            d + "/bad.csv:3: 4 fields, the header has 2 (data.bad_rows: skip would skip and count such rows)");
  test::CliResult r =
      run_cli("predict " + d + "/run --input " + d + "/bad.csv --out " + d + "/x.jsonl --set data.bad_rows=skip");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "2 rows (1 bad rows skipped, 0 truncated)")) << r.out;
  const std::vector<std::string> rows = lines_of(d + "/x.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(rows[1])["row"], 2);
  test::write_bytes(d + "/unknown.csv", "review,sentiment\n\"a fine film\",pos\n\"meh\",neutral\n");
  one_error(run_cli("evaluate " + d + "/run --data " + d + "/unknown.csv"), 4,
            d + "/unknown.csv:3: label 'neutral' is not one of the class names (neg, pos)");
  test::write_bytes(d + "/nolabel.csv", "review\n\"a fine film\"\n");
  one_error(run_cli("evaluate " + d + "/run --data " + d + "/nolabel.csv"), 4,
            d + "/nolabel.csv:1: no column 'sentiment' (data.label_column); the header has 'review'");
  r = run_cli("predict " + d + "/run --input " + d + "/nolabel.csv --out " + d + "/y.csv");  // labels not needed
  EXPECT_EQ(r.code, 0) << r.out;
  // Command-line mistakes (exit 2) and overrides outside data.* / tokenizer.* (exit 3).
  one_error(run_cli("evaluate --data " + run.test_csv), 2,
            "name the model: a run directory, a checkpoint, or --hf DIR");
  one_error(run_cli("evaluate " + d + "/run --hf " + d + " --data " + run.test_csv), 2, "name one model");
  one_error(run_cli("predict " + d + "/run --input " + run.test_csv + " --out " + d + "/p.txt"), 2,
            "--out " + d + "/p.txt: the file name must end in .jsonl or .csv");
  one_error(run_cli("predict " + d + "/run --input " + run.test_csv), 2, "predict: name an output");
  one_error(run_cli("evaluate " + d + "/run --data " + run.test_csv + " --set model.d_model=8"), 3,
            "--set model.d_model: only data.* and tokenizer.* keys can be set here");
  one_error(run_cli("evaluate " + d + "/run --data " + run.test_csv + " --set data.seq_len=x"), 3,
            "--set data.seq_len: expected an integer, got 'x'");
  // An export directory without a tokenizer file.
  r = run_cli("export " + d + "/run --hf " + d + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  std::filesystem::remove(d + "/hf/mamba_tokenizer.json");
  one_error(run_cli("evaluate --hf " + d + "/hf --data " + run.test_csv), 5,
            d + "/hf/config.json: the directory has no tokenizer.json or mamba_tokenizer.json");
  EXPECT_EQ(run_cli("evaluate --hf " + d + "/hf --data " + run.test_csv + " --set tokenizer.kind=byte").code, 0);
  std::filesystem::remove_all(d);
}

TEST(Inference, IntegerLabelledFastaClassifier) {
  // DNA records, one FASTA file per class, integer labels (no names in the checkpoint, as before string labels).
  const std::string d = test::temp_dir("infer_fasta");
  write_two_class_fasta(d);
  test::CliResult r = run_cli(
      "train configs/promoters-ecoli.yaml --set run.out_dir=" + d + "/run --set data.class_files=" + d + "/a.fa," + d +
      "/b.fa --set model.d_model=16 --set model.n_layer=1 --set model.bidirectional=false --set trainer.max_steps=2"
      " --set scheduler.warmup_steps=0 --set trainer.micro_batch_size=8 --set trainer.global_batch_size=8"
      " --set logging.progress=false --set checkpoint.every=0 --set run.device=cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(train::load_checkpoint(train::resolve_checkpoint(d + "/run")).strings.count("label_names"), 0u);
  r = run_cli("evaluate " + d + "/run --set data.class_files=" + d + "/a.fa," + d + "/b.fa --out " + d + "/e.json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json e = nlohmann::json::parse(test::read_bytes(d + "/e.json"));
  EXPECT_EQ(e["n"], 48);
  EXPECT_EQ(e["per_class"][0]["label"], "0");
  EXPECT_EQ(e["per_class"][0]["support"], 24);
  r = run_cli("evaluate " + d + "/run --data " + d + "/a.fa");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "a FASTA classifier reads one file per class")) << r.out;
  r = run_cli("predict " + d + "/run --input " + d + "/b.fa --out " + d + "/p.csv");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::string> rows = lines_of(d + "/p.csv");
  ASSERT_EQ(rows.size(), 25u);
  EXPECT_EQ(rows[0], "row,predicted,prob_0,prob_1");
  std::filesystem::remove_all(d);
}

// data.test_fraction holds rows out of training and of its evaluations; `evaluate --split` scores a run on the
// rows training held out, rebuilt from its config and checked against its data fingerprint.
TEST(Inference, EvaluateSplitScoresTheRowsTrainingHeldOut) {
  const std::string d = test::temp_dir("infer_split");
  const std::string b = write_two_class_fasta(d);
  const std::string files = " --set data.class_files=" + d + "/a.fa," + d + "/b.fa";
  const std::string small =
      " --set model.d_model=16 --set model.n_layer=1 --set model.bidirectional=false --set trainer.max_steps=4"
      " --set scheduler.warmup_steps=0 --set trainer.micro_batch_size=8 --set trainer.global_batch_size=8"
      " --set trainer.eval_every=4 --set trainer.eval_batches=0 --set logging.progress=false"
      " --set checkpoint.every=0 --set run.device=cpu --set data.val_fraction=0.25";
  test::CliResult r = run_cli("train configs/promoters-ecoli.yaml --set run.out_dir=" + d + "/run" + files + small +
                              " --set data.test_fraction=0.25");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "24 train (classes")) << r.out;
  EXPECT_TRUE(contains(r.out, "/ 12 validation / 12 test (held out)")) << r.out;
  EXPECT_TRUE(contains(r.out, "  n=12")) << r.out;
  // The validation split scored again equals the training's last evaluation of it (same model, same rows).
  r = run_cli("evaluate " + d + "/run --split val --out " + d + "/val.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "the validation split (12 rows; data.val_fraction 0.25")) << r.out;
  const nlohmann::json v = nlohmann::json::parse(test::read_bytes(d + "/val.json"));
  EXPECT_EQ(v["n"], 12);
  nlohmann::json last_eval;
  for (const std::string& l : lines_of(d + "/run/metrics.jsonl")) {
    const nlohmann::json j = nlohmann::json::parse(l);
    if (j.contains("eval")) last_eval = j["eval"];
  }
  ASSERT_TRUE(last_eval.contains("accuracy")) << last_eval.dump();
  EXPECT_NEAR(last_eval["accuracy"].get<double>(), v["accuracy"].get<double>(), 1e-12) << v.dump();
  EXPECT_NEAR(last_eval["mcc"].get<double>(), v["mcc"].get<double>(), 1e-12) << v.dump();
  r = run_cli("evaluate " + d + "/run --split test --out " + d + "/test.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "the test split (12 rows; data.test_fraction 0.25")) << r.out;
  EXPECT_EQ(nlohmann::json::parse(test::read_bytes(d + "/test.json"))["n"], 12);
  // Bad uses: one line each, with its exit code.
  r = run_cli("evaluate " + d + "/run --split test --data " + d + "/a.fa");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "give --data FILE or --split, not both")) << r.out;
  r = run_cli("evaluate " + d + "/run --split test" + files);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "drop --set")) << r.out;
  r = run_cli("evaluate " + d + "/run --split train");
  EXPECT_EQ(r.code, 2) << r.out;
  // A run without a test split.
  r = run_cli("train configs/promoters-ecoli.yaml --set run.out_dir=" + d + "/run2" + files + small);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("evaluate " + d + "/run2 --split test");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "holds out no test rows (train with data.test_fraction > 0)")) << r.out;
  // The data changed since training: the held-out rows can no longer be told apart.
  test::write_bytes(d + "/b.fa", b + ">b24\nACGTACGTTTTT\n");
  r = run_cli("evaluate " + d + "/run --split test");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "is not what")) << r.out;
  EXPECT_TRUE(contains(r.out, "trained on")) << r.out;
  std::filesystem::remove_all(d);
}

TEST(Inference, RcEquivariantFeaturesAreTheSameForBothStrands) {
  // A reverse-complement-equivariant DNA classifier (PAD EOD A C G T N MASK): a sequence and its reverse complement
  // get the same pooled features and class probabilities; per-token hidden states hold both strands (2 d_model).
  MambaConfig mc;
  mc.vocab_size = 8;
  mc.d_model = 6;
  mc.n_layer = 2;
  mc.d_state = 3;
  mc.rc_equivariant = true;
  mc.rc_complement = {0, 1, 5, 4, 3, 2, 6, 7};
  mc.finalize();
  train::InferenceModel m;
  m.cls = std::make_unique<nn::MambaForSequenceClassification>(mc, 2, "mean");
  Generator g(4);
  m.cls->init_parameters(g);
  const std::vector<int32_t> seq = {2, 2, 3, 4, 5, 6, 3, 2, 4};
  train::InputRow a, b;
  a.ids = seq;
  for (size_t t = 0; t < seq.size(); ++t)
    b.ids.push_back(static_cast<int32_t>(mc.rc_complement[seq[seq.size() - 1 - t]]));
  b.row = 1;
  train::ForwardRequest req;
  req.probs = req.pooled = req.hidden = true;
  const train::BatchOutputs out = train::run_batch(m, {a, b}, req);
  EXPECT_EQ(out.pooled.shape(), (Shape{2, 6}));
  EXPECT_EQ(out.hidden.shape(), (Shape{2, 9, 12}));
  const std::vector<double> p = out.pooled.to_vector();
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(p[static_cast<size_t>(k)], p[static_cast<size_t>(6 + k)], 1e-5) << k;
  EXPECT_NEAR(out.probs[0], out.probs[2], 1e-6);
  // The same probabilities as the classifier's own forward.
  NoGradGuard ng;
  nn::ForwardOptions fo;
  std::vector<int64_t> ids(seq.begin(), seq.end());
  const std::vector<double> logits = m.cls->forward(Tensor::from_vector_i64(ids, {1, 9}), fo).to_vector();
  EXPECT_NEAR(out.probs[1], 1.0 / (1.0 + std::exp(logits[0] - logits[1])), 1e-6);
}
