#include "train/metrics.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt::train {

namespace {

double safe_div(double num, double den) { return den != 0.0 ? num / den : 0.0; }

// Rounding can put a correlation a hair outside [-1, 1].
double clamp_unit(double v) { return std::min(1.0, std::max(-1.0, v)); }

}  // namespace

ClassificationMetrics classification_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& truth,
                                             int64_t num_classes) {
  MT_CHECK_SHAPE(predicted.size() == truth.size(), "classification_metrics: ", predicted.size(), " predictions but ",
                 truth.size(), " true labels");
  MT_CHECK_SHAPE(num_classes >= 2, "classification_metrics: num_classes must be >= 2, got ", num_classes);
  ClassificationMetrics m;
  m.n = static_cast<int64_t>(truth.size());
  if (m.n == 0) return m;

  const size_t k = static_cast<size_t>(num_classes);
  std::vector<int64_t> tp(k, 0), t_count(k, 0), p_count(k, 0);
  int64_t correct = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    const int64_t t = truth[i], p = predicted[i];
    MT_CHECK(t >= 0 && t < num_classes, ErrorKind::Data, "classification_metrics: true label ", t, " at position ", i,
             " is outside [0, ", num_classes, ")");
    MT_CHECK(p >= 0 && p < num_classes, ErrorKind::Data, "classification_metrics: predicted label ", p, " at position ",
             i, " is outside [0, ", num_classes, ")");
    ++t_count[static_cast<size_t>(t)];
    ++p_count[static_cast<size_t>(p)];
    if (t == p) {
      ++tp[static_cast<size_t>(t)];
      ++correct;
    }
  }
  const double n = static_cast<double>(m.n);
  m.accuracy = static_cast<double>(correct) / n;

  auto f1_of = [&](size_t c) {
    return safe_div(2.0 * static_cast<double>(tp[c]), static_cast<double>(t_count[c] + p_count[c]));
  };

  if (num_classes == 2) {
    const double TP = static_cast<double>(tp[1]), TN = static_cast<double>(tp[0]);
    const double FP = static_cast<double>(p_count[1] - tp[1]), FN = static_cast<double>(t_count[1] - tp[1]);
    m.f1 = f1_of(1);
    // One sqrt of the whole product: exact for small counts (a perfect predictor gives exactly 1); the product of
    // four counts stays far inside double range for any real n.
    const double den = std::sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN));
    m.mcc = clamp_unit(safe_div(TP * TN - FP * FN, den));
    return m;
  }

  double f1_sum = 0;
  int64_t present = 0;
  double sum_pt = 0, sum_pp = 0, sum_tt = 0;
  for (size_t c = 0; c < k; ++c) {
    const double tc = static_cast<double>(t_count[c]), pc = static_cast<double>(p_count[c]);
    sum_pt += pc * tc;
    sum_pp += pc * pc;
    sum_tt += tc * tc;
    if (t_count[c] + p_count[c] > 0) {
      f1_sum += f1_of(c);
      ++present;
    }
  }
  m.f1 = safe_div(f1_sum, static_cast<double>(present));
  const double cov = static_cast<double>(correct) * n - sum_pt;
  const double den = std::sqrt((n * n - sum_pp) * (n * n - sum_tt));
  m.mcc = clamp_unit(safe_div(cov, den));
  return m;
}

}  // namespace mt::train
