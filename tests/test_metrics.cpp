// Evaluation metrics (train/metrics.h) and the loss-curve SVG (train/plot.h).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "train/metrics.h"
#include "train/plot.h"

using namespace mt;
using train::classification_metrics;

namespace {

int count_of(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string temp_dir() {
  char tmpl[] = "/tmp/mt_metrics_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d ? d : "/tmp";
}

void expect_well_formed(const std::string& svg) {
  EXPECT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 80);
  const std::string end = "</svg>\n";
  ASSERT_GE(svg.size(), end.size());
  EXPECT_EQ(svg.substr(svg.size() - end.size()), end);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  EXPECT_EQ(count_of(svg, "<text"), count_of(svg, "</text>"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// classification_metrics

TEST(Metrics, PerfectPredictions) {
  auto m = classification_metrics({0, 1, 1, 0, 1}, {0, 1, 1, 0, 1}, 2);
  EXPECT_EQ(m.n, 5);
  EXPECT_EQ(m.accuracy, 1.0);
  EXPECT_EQ(m.f1, 1.0);
  EXPECT_EQ(m.mcc, 1.0);
  auto k = classification_metrics({0, 1, 2, 2}, {0, 1, 2, 2}, 3);
  EXPECT_EQ(k.accuracy, 1.0);
  EXPECT_EQ(k.f1, 1.0);
  EXPECT_EQ(k.mcc, 1.0);
}

TEST(Metrics, AllWrong) {
  auto m = classification_metrics({1, 0, 1, 0}, {0, 1, 0, 1}, 2);
  EXPECT_EQ(m.accuracy, 0.0);
  EXPECT_EQ(m.f1, 0.0);
  EXPECT_EQ(m.mcc, -1.0);
}

TEST(Metrics, KnownBinaryConfusionMatrix) {
  // TP = 6, FN = 2, FP = 1, TN = 3 (n = 12).
  std::vector<int64_t> truth, pred;
  auto add = [&](int64_t t, int64_t p, int count) {
    for (int i = 0; i < count; ++i) truth.push_back(t), pred.push_back(p);
  };
  add(1, 1, 6);
  add(1, 0, 2);
  add(0, 1, 1);
  add(0, 0, 3);
  auto m = classification_metrics(pred, truth, 2);
  EXPECT_EQ(m.n, 12);
  EXPECT_NEAR(m.accuracy, 9.0 / 12.0, 1e-12);
  EXPECT_NEAR(m.f1, 12.0 / 15.0, 1e-12);  // 2TP / (2TP + FP + FN)
  // (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (18 - 2) / sqrt(7 * 8 * 4 * 5) = 16 / sqrt(1120)
  EXPECT_NEAR(m.mcc, 16.0 / std::sqrt(1120.0), 1e-12);
  EXPECT_NEAR(m.mcc, 0.47809144373375745, 1e-12);
}

TEST(Metrics, MulticlassMacroF1AndGorodkinMcc) {
  // 3 classes. truth: 0 0 0 1 1 2 2 2 ; pred: 0 1 0 1 2 2 2 0
  // Confusion (row truth, col pred): [[2,1,0],[0,1,1],[1,0,2]]; t = (3,2,3), p = (3,2,3), correct c = 5, n = 8.
  // F1_0 = 4/6, F1_1 = 2/4, F1_2 = 4/6 -> macro 11/18.
  // R_K = (c n - sum p_k t_k) / sqrt((n^2 - sum p^2)(n^2 - sum t^2)) = (40 - 22) / sqrt(42 * 42) = 18 / 42 = 3/7.
  auto m = classification_metrics({0, 1, 0, 1, 2, 2, 2, 0}, {0, 0, 0, 1, 1, 2, 2, 2}, 3);
  EXPECT_EQ(m.n, 8);
  EXPECT_NEAR(m.accuracy, 5.0 / 8.0, 1e-12);
  EXPECT_NEAR(m.f1, 11.0 / 18.0, 1e-12);
  EXPECT_NEAR(m.mcc, 3.0 / 7.0, 1e-12);
}

TEST(Metrics, MulticlassIgnoresClassesThatNeverOccurAndAgreesWithBinaryMcc) {
  // num_classes 5 but only classes 0..2 occur: the same numbers as the 3-class example.
  auto m = classification_metrics({0, 1, 0, 1, 2, 2, 2, 0}, {0, 0, 0, 1, 1, 2, 2, 2}, 5);
  EXPECT_NEAR(m.f1, 11.0 / 18.0, 1e-12);
  EXPECT_NEAR(m.mcc, 3.0 / 7.0, 1e-12);
  // Only classes 0 and 1 used with num_classes 3: Gorodkin's R_K equals the binary Matthews coefficient.
  std::vector<int64_t> pred = {1, 1, 0, 1, 0, 0, 1}, truth = {1, 0, 0, 1, 1, 0, 1};
  EXPECT_NEAR(classification_metrics(pred, truth, 3).mcc, classification_metrics(pred, truth, 2).mcc, 1e-12);
}

TEST(Metrics, DegenerateCasesGiveZero) {
  auto e = classification_metrics({}, {}, 2);
  EXPECT_EQ(e.n, 0);
  EXPECT_EQ(e.accuracy, 0.0);
  EXPECT_EQ(e.f1, 0.0);
  EXPECT_EQ(e.mcc, 0.0);
  // Everything is class 0 in both: accuracy 1, F1 of class 1 undefined -> 0, MCC undefined -> 0.
  auto z = classification_metrics({0, 0, 0}, {0, 0, 0}, 2);
  EXPECT_EQ(z.accuracy, 1.0);
  EXPECT_EQ(z.f1, 0.0);
  EXPECT_EQ(z.mcc, 0.0);
  // A constant predictor: MCC 0 (no correlation) rather than NaN.
  auto c = classification_metrics({1, 1, 1, 1}, {1, 0, 1, 0}, 2);
  EXPECT_EQ(c.accuracy, 0.5);
  EXPECT_NEAR(c.f1, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(c.mcc, 0.0);
  auto mc = classification_metrics({2, 2, 2}, {0, 1, 2}, 3);
  EXPECT_EQ(mc.mcc, 0.0);
  EXPECT_FALSE(std::isnan(mc.f1));
  EXPECT_NEAR(mc.f1, (0.0 + 0.0 + 0.5) / 3.0, 1e-12);  // F1_2 = 2 / (1 + 3)
}

TEST(Metrics, BadInputIsAnErrorNamingThePosition) {
  EXPECT_THROW(classification_metrics({0, 1}, {0}, 2), Error);
  EXPECT_THROW(classification_metrics({0}, {0}, 1), Error);
  try {
    classification_metrics({0, 1, 7}, {0, 1, 1}, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    EXPECT_NE(std::string(e.what()).find("position 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(classification_metrics({0}, {-1}, 2), Error);
}

TEST(Metrics, RocAucAndAveragePrecisionOnHandMadeScores) {
  // Scores 0.9 0.8 0.7 0.6 with truths 1 0 1 0. ROC AUC: of the 4 (positive, negative) pairs, (0.9, 0.8), (0.9, 0.6)
  // and (0.7, 0.6) are ordered right, (0.7, 0.8) wrong: 3/4. Average precision: thresholds 0.9 (P 1, R 1/2), 0.8
  // (P 1/2, R 1/2), 0.7 (P 2/3, R 1), 0.6 (P 1/2, R 1): 1/2 * 1 + 0 + 1/2 * 2/3 + 0 = 5/6.
  EXPECT_DOUBLE_EQ(train::roc_auc({0.9, 0.8, 0.7, 0.6}, {1, 0, 1, 0}), 0.75);
  EXPECT_DOUBLE_EQ(train::average_precision({0.9, 0.8, 0.7, 0.6}, {1, 0, 1, 0}), 5.0 / 6.0);
  // Input order does not matter.
  EXPECT_DOUBLE_EQ(train::roc_auc({0.6, 0.7, 0.8, 0.9}, {0, 1, 0, 1}), 0.75);
  EXPECT_DOUBLE_EQ(train::average_precision({0.6, 0.7, 0.8, 0.9}, {0, 1, 0, 1}), 5.0 / 6.0);
  // Perfect and reversed rankings.
  EXPECT_DOUBLE_EQ(train::roc_auc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(train::average_precision({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(train::roc_auc({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}), 0.0);
  // Reversed: thresholds 0.9 (P 0), 0.8 (P 0), 0.2 (P 1/3, R 1/2), 0.1 (P 1/2, R 1): 1/6 + 1/4 = 5/12.
  EXPECT_DOUBLE_EQ(train::average_precision({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}), 5.0 / 12.0);
  // Ties: one group holding a positive and a negative counts 1/2 for ROC and enters the PR curve at once.
  EXPECT_DOUBLE_EQ(train::roc_auc({0.5, 0.5}, {1, 0}), 0.5);
  EXPECT_DOUBLE_EQ(train::average_precision({0.5, 0.5}, {1, 0}), 0.5);
  // Scores 0.8 (pos), 0.5 (pos), 0.5 (neg), 0.2 (neg): pairs 1, 1, 1/2, 1 of 4 -> 7/8; AP: 0.8 (P 1, R 1/2), the tie
  // group 0.5 (P 2/3, R 1) -> 1/2 + 1/2 * 2/3 = 5/6.
  EXPECT_DOUBLE_EQ(train::roc_auc({0.8, 0.5, 0.5, 0.2}, {1, 1, 0, 0}), 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(train::average_precision({0.8, 0.5, 0.5, 0.2}, {1, 1, 0, 0}), 5.0 / 6.0);
  // Undefined: one class only.
  EXPECT_TRUE(std::isnan(train::roc_auc({0.3, 0.4}, {1, 1})));
  EXPECT_TRUE(std::isnan(train::roc_auc({0.3, 0.4}, {0, 0})));
  EXPECT_TRUE(std::isnan(train::average_precision({0.3, 0.4}, {0, 0})));
  EXPECT_DOUBLE_EQ(train::average_precision({0.3, 0.4}, {1, 1}), 1.0);
  EXPECT_THROW(train::roc_auc({0.3}, {1, 0}), Error);
}

TEST(Metrics, ReportHasPerClassConfusionAndTheDocumentedJsonKeys) {
  // The 3-class example above as probabilities: predicted = argmax.
  const std::vector<int64_t> truth = {0, 0, 0, 1, 1, 2, 2, 2}, pred = {0, 1, 0, 1, 2, 2, 2, 0};
  train::ClassificationEvaluator ev({"a", "b", "c"});
  for (size_t i = 0; i < truth.size(); ++i) {
    double p[3] = {0.1, 0.1, 0.1};
    p[pred[i]] = 0.8;
    ev.add(p, truth[i]);
  }
  const train::ClassificationReport r = ev.report();
  EXPECT_EQ(r.n, 8);
  EXPECT_NEAR(r.accuracy, 5.0 / 8.0, 1e-12);
  EXPECT_NEAR(r.f1_macro, 11.0 / 18.0, 1e-12);
  EXPECT_EQ(r.f1, r.f1_macro);  // more than two classes: f1 is the macro average, as before
  EXPECT_NEAR(r.mcc, 3.0 / 7.0, 1e-12);
  EXPECT_EQ(r.confusion, (std::vector<std::vector<int64_t>>{{2, 1, 0}, {0, 1, 1}, {1, 0, 2}}));
  ASSERT_EQ(r.per_class.size(), 3u);
  EXPECT_EQ(r.per_class[1].label, "b");
  EXPECT_NEAR(r.per_class[1].precision, 1.0 / 2.0, 1e-12);  // column b: 1 of 2 predictions right
  EXPECT_NEAR(r.per_class[1].recall, 1.0 / 2.0, 1e-12);
  EXPECT_NEAR(r.per_class[2].precision, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(r.per_class[2].recall, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(r.per_class[0].support, 3);
  const nlohmann::ordered_json j = train::to_json(r);
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"accuracy", "f1", "f1_macro", "per_class", "mcc", "confusion", "n"}));
  EXPECT_EQ(j["per_class"][2].dump(),
            "{\"label\":\"c\",\"precision\":0.6666666666666666,\"recall\":0.6666666666666666,"
            "\"f1\":0.6666666666666666,\"support\":3}");
  // Two classes add the AUCs; a class that never occurs gives zeros, not NaN.
  train::ClassificationEvaluator two({"neg", "pos"});
  const double rows[4][2] = {{0.1, 0.9}, {0.2, 0.8}, {0.3, 0.7}, {0.4, 0.6}};
  const int64_t t2[4] = {1, 0, 1, 0};
  for (int i = 0; i < 4; ++i) two.add(rows[i], t2[i]);
  const train::ClassificationReport b = two.report();
  EXPECT_DOUBLE_EQ(b.roc_auc, 0.75);
  EXPECT_DOUBLE_EQ(b.pr_auc, 5.0 / 6.0);
  EXPECT_EQ(b.accuracy, 0.5);
  EXPECT_EQ(b.per_class[0].precision, 0.0);  // never predicted
  const nlohmann::ordered_json jb = train::to_json(b);
  EXPECT_EQ(jb["roc_auc"].get<double>(), 0.75);
  EXPECT_TRUE(jb.contains("pr_auc"));
  // One class in the truth: the AUCs are undefined and written as null.
  train::ClassificationEvaluator one({"neg", "pos"});
  one.add(rows[0], 1);
  EXPECT_TRUE(train::to_json(one.report())["roc_auc"].is_null());
  EXPECT_THROW(one.add(rows[0], 2), Error);
  const std::string table = train::to_table(b);
  EXPECT_NE(table.find("roc_auc 0.7500"), std::string::npos) << table;
  EXPECT_NE(table.find("confusion (rows: true class, columns: predicted)"), std::string::npos) << table;
}

TEST(Metrics, LanguageModelReport) {
  train::LanguageModelReport r;
  r.n = 4;
  r.nats = 4 * std::log(2.0);  // 1 bit per token
  r.bytes = 8;                 // 2 bytes per token: half a bit per byte
  EXPECT_NEAR(r.loss(), std::log(2.0), 1e-15);
  EXPECT_NEAR(r.perplexity(), 2.0, 1e-12);
  EXPECT_NEAR(r.bits_per_token(), 1.0, 1e-12);
  EXPECT_NEAR(r.bits_per_byte(), 0.5, 1e-12);
  nlohmann::ordered_json j = train::to_json(r);
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"loss", "perplexity", "bits_per_token", "bits_per_byte", "n"}));
  r.bytes = -1;  // not text (selective copying)
  EXPECT_FALSE(train::to_json(r).contains("bits_per_byte"));
  r.n = 0;
  EXPECT_TRUE(train::to_json(r)["loss"].is_null());
}

// ---------------------------------------------------------------------------------------------------------------
// write_loss_svg

TEST(LossPlot, WritesAWellFormedSvgWithTwoCurvesAndALegend) {
  const std::string dir = temp_dir(), path = dir + "/loss.svg";
  std::vector<std::pair<int64_t, double>> tr, va;
  for (int64_t s = 0; s <= 1000; s += 10) tr.push_back({s, 5.0 * std::exp(-s / 300.0) + 1.2});
  for (int64_t s = 0; s <= 1000; s += 100) va.push_back({s, 5.0 * std::exp(-s / 300.0) + 1.5});
  train::write_loss_svg(path, tr, va, "byte LM <tinyshakespeare> & co");
  const std::string svg = read_file(path);
  expect_well_formed(svg);
  EXPECT_EQ(count_of(svg, "<polyline"), 2);
  EXPECT_NE(svg.find(">train</text>"), std::string::npos);
  EXPECT_NE(svg.find(">val</text>"), std::string::npos);
  EXPECT_NE(svg.find("byte LM &lt;tinyshakespeare&gt; &amp; co"), std::string::npos);  // escaped title
  // Round tick labels: steps 0 .. 1000 in hundreds-ish, and the loss axis.
  EXPECT_NE(svg.find(">1000</text>"), std::string::npos);
  EXPECT_NE(svg.find(">0</text>"), std::string::npos);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  // No temporary file left behind.
  EXPECT_EQ(::access((path + ".tmp." + std::to_string(::getpid()) + ".0").c_str(), F_OK), -1);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST(LossPlot, EmptyValidationSeriesAndNaNPoints) {
  const std::string dir = temp_dir(), path = dir + "/loss.svg";
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<std::pair<int64_t, double>> tr = {{1, 3.0}, {2, nan}, {3, 2.5}, {4, inf}, {5, 2.0}};
  train::write_loss_svg(path, tr, {}, "run");
  std::string svg = read_file(path);
  expect_well_formed(svg);
  EXPECT_EQ(count_of(svg, "<polyline"), 1);
  EXPECT_NE(svg.find(">train</text>"), std::string::npos);
  EXPECT_EQ(svg.find(">val</text>"), std::string::npos);
  // The three finite points are drawn: 3 coordinate pairs in the polyline.
  const size_t a = svg.find("points=\""), b = svg.find('"', a + 8);
  EXPECT_EQ(count_of(svg.substr(a, b - a), ","), 3);

  // Overwriting works (atomic replace), and both series empty still give a valid file.
  train::write_loss_svg(path, {}, {}, "empty");
  svg = read_file(path);
  expect_well_formed(svg);
  EXPECT_EQ(count_of(svg, "<polyline"), 0);
  EXPECT_NE(svg.find("no data"), std::string::npos);
  // Only non-finite values, and a single point: no NaN coordinates anywhere.
  expect_well_formed(train::loss_svg({{0, nan}}, {{7, 1.0}}, "one"));
  expect_well_formed(train::loss_svg({{5, 2.0}, {5, 2.0}}, {}, "flat"));
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST(LossPlot, IoErrorsNameThePath) {
  try {
    train::write_loss_svg("/nonexistent-dir-mt/loss.svg", {{1, 1.0}}, {}, "x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir-mt/loss.svg"), std::string::npos) << e.what();
  }
}
