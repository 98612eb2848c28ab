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
