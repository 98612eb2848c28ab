#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace mt::train {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double safe_div(double num, double den) { return den != 0.0 ? num / den : 0.0; }

// Rounding can put a correlation a hair outside [-1, 1].
double clamp_unit(double v) { return std::min(1.0, std::max(-1.0, v)); }

// Counts behind every classification metric.
struct Counts {
  int64_t n = 0, correct = 0;
  std::vector<std::vector<int64_t>> confusion;  // [truth][predicted]
  std::vector<int64_t> tp, t_count, p_count;
};

Counts count(const std::vector<int64_t>& predicted, const std::vector<int64_t>& truth, int64_t num_classes) {
  MT_CHECK_SHAPE(predicted.size() == truth.size(), "classification_metrics: ", predicted.size(), " predictions but ",
                 truth.size(), " true labels");
  MT_CHECK_SHAPE(num_classes >= 2, "classification_metrics: num_classes must be >= 2, got ", num_classes);
  const size_t k = static_cast<size_t>(num_classes);
  Counts c;
  c.n = static_cast<int64_t>(truth.size());
  c.confusion.assign(k, std::vector<int64_t>(k, 0));
  c.tp.assign(k, 0);
  c.t_count.assign(k, 0);
  c.p_count.assign(k, 0);
  for (size_t i = 0; i < truth.size(); ++i) {
    const int64_t t = truth[i], p = predicted[i];
    MT_CHECK(t >= 0 && t < num_classes, ErrorKind::Data, "classification_metrics: true label ", t, " at position ", i,
             " is outside [0, ", num_classes, ")");
    MT_CHECK(p >= 0 && p < num_classes, ErrorKind::Data, "classification_metrics: predicted label ", p, " at position ",
             i, " is outside [0, ", num_classes, ")");
    ++c.confusion[static_cast<size_t>(t)][static_cast<size_t>(p)];
    ++c.t_count[static_cast<size_t>(t)];
    ++c.p_count[static_cast<size_t>(p)];
    if (t == p) {
      ++c.tp[static_cast<size_t>(t)];
      ++c.correct;
    }
  }
  return c;
}

double f1_of(const Counts& c, size_t k) {
  return safe_div(2.0 * static_cast<double>(c.tp[k]), static_cast<double>(c.t_count[k] + c.p_count[k]));
}

double macro_f1(const Counts& c) {
  double sum = 0;
  int64_t present = 0;
  for (size_t k = 0; k < c.tp.size(); ++k) {
    if (c.t_count[k] + c.p_count[k] == 0) continue;
    sum += f1_of(c, k);
    ++present;
  }
  return safe_div(sum, static_cast<double>(present));
}

double mcc_of(const Counts& c) {
  if (c.tp.size() == 2) {
    const double TP = static_cast<double>(c.tp[1]), TN = static_cast<double>(c.tp[0]);
    const double FP = static_cast<double>(c.p_count[1] - c.tp[1]), FN = static_cast<double>(c.t_count[1] - c.tp[1]);
    // One sqrt of the whole product: exact for small counts (a perfect predictor gives exactly 1); the product of
    // four counts stays far inside double range for any real n.
    const double den = std::sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN));
    return clamp_unit(safe_div(TP * TN - FP * FN, den));
  }
  const double n = static_cast<double>(c.n);
  double sum_pt = 0, sum_pp = 0, sum_tt = 0;
  for (size_t k = 0; k < c.tp.size(); ++k) {
    const double tc = static_cast<double>(c.t_count[k]), pc = static_cast<double>(c.p_count[k]);
    sum_pt += pc * tc;
    sum_pp += pc * pc;
    sum_tt += tc * tc;
  }
  const double cov = static_cast<double>(c.correct) * n - sum_pt;
  const double den = std::sqrt((n * n - sum_pp) * (n * n - sum_tt));
  return clamp_unit(safe_div(cov, den));
}

// Indices of the scores, highest first (NaN scores last; equal scores keep their input order).
std::vector<size_t> by_score_descending(const std::vector<double>& s) {
  std::vector<size_t> order(s.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (std::isnan(s[b])) return !std::isnan(s[a]);
    return s[a] > s[b];
  });
  return order;
}

bool same_score(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// Fixed-width number for tables: "0.8125", "nan" for undefined values.
std::string fixed(double v, int digits = 4) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

nlohmann::ordered_json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}

std::string pad_right(const std::string& s, size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); }
std::string pad_left(const std::string& s, size_t w) { return s.size() >= w ? s : std::string(w - s.size(), ' ') + s; }

}  // namespace

ClassificationMetrics classification_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& truth,
                                             int64_t num_classes) {
  const Counts c = count(predicted, truth, num_classes);
  ClassificationMetrics m;
  m.n = c.n;
  if (m.n == 0) return m;
  m.accuracy = static_cast<double>(c.correct) / static_cast<double>(c.n);
  m.f1 = num_classes == 2 ? f1_of(c, 1) : macro_f1(c);
  m.mcc = mcc_of(c);
  return m;
}

double roc_auc(const std::vector<double>& scores, const std::vector<int64_t>& positive) {
  MT_CHECK_SHAPE(scores.size() == positive.size(), "roc_auc: ", scores.size(), " scores but ", positive.size(),
                 " labels");
  // Mann-Whitney: walk the scores from the lowest; each positive beats the negatives below it and ties half of the
  // negatives in its own tie group.
  const std::vector<size_t> order = by_score_descending(scores);
  double n_pos = 0, n_neg = 0, wins = 0;
  for (int64_t p : positive) (p != 0 ? n_pos : n_neg) += 1;
  if (n_pos == 0 || n_neg == 0) return kNaN;
  double neg_below = n_neg;  // negatives with a score strictly below the current group
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    double pos = 0, neg = 0;
    while (j < order.size() && same_score(scores[order[j]], scores[order[i]])) {
      (positive[order[j]] != 0 ? pos : neg) += 1;
      ++j;
    }
    neg_below -= neg;
    wins += pos * (neg_below + 0.5 * neg);
    i = j;
  }
  return wins / (n_pos * n_neg);
}

double average_precision(const std::vector<double>& scores, const std::vector<int64_t>& positive) {
  MT_CHECK_SHAPE(scores.size() == positive.size(), "average_precision: ", scores.size(), " scores but ",
                 positive.size(), " labels");
  double n_pos = 0;
  for (int64_t p : positive) n_pos += p != 0;
  if (n_pos == 0) return kNaN;
  const std::vector<size_t> order = by_score_descending(scores);
  double tp = 0, fp = 0, recall_prev = 0, ap = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && same_score(scores[order[j]], scores[order[i]])) {
      (positive[order[j]] != 0 ? tp : fp) += 1;
      ++j;
    }
    const double recall = tp / n_pos, precision = tp / (tp + fp);
    ap += (recall - recall_prev) * precision;
    recall_prev = recall;
    i = j;
  }
  return ap;
}

int64_t argmax(const double* v, int64_t n) {
  int64_t best = 0;
  for (int64_t k = 1; k < n; ++k)
    if (v[k] > v[best]) best = k;
  return best;
}

double softmax_row(const double* logits, int64_t n, double* probs) {
  double mx = logits[0];
  for (int64_t k = 1; k < n; ++k) mx = std::max(mx, logits[k]);
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += probs[k] = std::exp(logits[k] - mx);
  for (int64_t k = 0; k < n; ++k) probs[k] /= sum;
  return mx + std::log(sum);
}

ClassificationEvaluator::ClassificationEvaluator(std::vector<std::string> labels) : labels_(std::move(labels)) {
  MT_CHECK_SHAPE(labels_.size() >= 2, "ClassificationEvaluator: needs at least 2 classes, got ", labels_.size());
}

void ClassificationEvaluator::add(const double* probs, int64_t truth) {
  const int64_t C = num_classes();
  MT_CHECK(truth >= 0 && truth < C, ErrorKind::Data, "evaluation: true class ", truth, " is outside [0, ", C, ")");
  truth_.push_back(truth);
  predicted_.push_back(argmax(probs, C));
  if (C == 2) positive_score_.push_back(probs[1]);
}

ClassificationReport ClassificationEvaluator::report() const {
  const int64_t C = num_classes();
  const Counts c = count(predicted_, truth_, C);
  ClassificationReport r;
  r.labels = labels_;
  r.n = c.n;
  r.confusion = c.confusion;
  for (size_t k = 0; k < labels_.size(); ++k) {
    ClassMetrics m;
    m.label = labels_[k];
    m.precision = safe_div(static_cast<double>(c.tp[k]), static_cast<double>(c.p_count[k]));
    m.recall = safe_div(static_cast<double>(c.tp[k]), static_cast<double>(c.t_count[k]));
    m.f1 = f1_of(c, k);
    m.support = c.t_count[k];
    r.per_class.push_back(m);
  }
  if (c.n > 0) {
    r.accuracy = static_cast<double>(c.correct) / static_cast<double>(c.n);
    r.f1_macro = macro_f1(c);
    r.f1 = C == 2 ? f1_of(c, 1) : r.f1_macro;
    r.mcc = mcc_of(c);
  }
  if (C == 2) {
    r.roc_auc = roc_auc(positive_score_, truth_);
    r.pr_auc = average_precision(positive_score_, truth_);
  } else {
    r.roc_auc = r.pr_auc = kNaN;
  }
  return r;
}

double LanguageModelReport::loss() const { return n > 0 ? nats / static_cast<double>(n) : kNaN; }
double LanguageModelReport::perplexity() const { return std::exp(loss()); }
double LanguageModelReport::bits_per_token() const { return loss() / std::log(2.0); }
double LanguageModelReport::bits_per_byte() const {
  return bytes > 0 ? nats / (static_cast<double>(bytes) * std::log(2.0)) : kNaN;
}

nlohmann::ordered_json to_json(const ClassificationReport& r) {
  nlohmann::ordered_json j;
  j["accuracy"] = r.accuracy;
  j["f1"] = r.f1;
  j["f1_macro"] = r.f1_macro;
  nlohmann::ordered_json pc = nlohmann::ordered_json::array();
  for (const ClassMetrics& m : r.per_class) {
    nlohmann::ordered_json e;
    e["label"] = m.label;
    e["precision"] = m.precision;
    e["recall"] = m.recall;
    e["f1"] = m.f1;
    e["support"] = m.support;
    pc.push_back(e);
  }
  j["per_class"] = pc;
  j["mcc"] = r.mcc;
  j["confusion"] = r.confusion;
  if (r.labels.size() == 2) {
    j["roc_auc"] = number_or_null(r.roc_auc);
    j["pr_auc"] = number_or_null(r.pr_auc);
  }
  j["n"] = r.n;
  return j;
}

nlohmann::ordered_json to_json(const LanguageModelReport& r) {
  nlohmann::ordered_json j;
  j["loss"] = number_or_null(r.loss());
  j["perplexity"] = number_or_null(r.perplexity());
  j["bits_per_token"] = number_or_null(r.bits_per_token());
  if (r.bytes >= 0) j["bits_per_byte"] = number_or_null(r.bits_per_byte());
  j["n"] = r.n;
  return j;
}

std::string to_table(const ClassificationReport& r) {
  std::string out = str("accuracy ", fixed(r.accuracy), "  f1 ", fixed(r.f1), "  f1_macro ", fixed(r.f1_macro),
                        "  mcc ", fixed(r.mcc));
  if (r.labels.size() == 2) out += str("  roc_auc ", fixed(r.roc_auc), "  pr_auc ", fixed(r.pr_auc));
  out += str("  n ", r.n, "\n");
  size_t w = 5;  // "class"
  for (const std::string& l : r.labels) w = std::max(w, l.size());
  out += str(pad_right("class", w), "  precision     recall         f1    support\n");
  for (const ClassMetrics& m : r.per_class)
    out += str(pad_right(m.label, w), "  ", pad_left(fixed(m.precision), 9), "  ", pad_left(fixed(m.recall), 9), "  ",
               pad_left(fixed(m.f1), 9), "  ", pad_left(std::to_string(m.support), 9), "\n");
  size_t cw = 1;
  for (const auto& row : r.confusion)
    for (int64_t v : row) cw = std::max(cw, std::to_string(v).size());
  for (const std::string& l : r.labels) cw = std::max(cw, l.size());
  out += "confusion (rows: true class, columns: predicted)\n" + pad_right("", w);
  for (const std::string& l : r.labels) out += "  " + pad_left(l, cw);
  out += "\n";
  for (size_t t = 0; t < r.confusion.size(); ++t) {
    out += pad_right(r.labels[t], w);
    for (int64_t v : r.confusion[t]) out += "  " + pad_left(std::to_string(v), cw);
    out += "\n";
  }
  return out;
}

std::string to_table(const LanguageModelReport& r) {
  std::string out = str("loss ", fixed(r.loss()), " nats/token  perplexity ", fixed(r.perplexity(), 3),
                        "  bits_per_token ", fixed(r.bits_per_token()));
  if (r.bytes >= 0) out += str("  bits_per_byte ", fixed(r.bits_per_byte()));
  return out + str("  n ", r.n, " tokens\n");
}

}  // namespace mt::train
