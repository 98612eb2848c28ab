// Evaluation metrics: one implementation for `mamba-train evaluate`, `predict`'s consumers and the trainer's
// periodic evaluation (metrics.jsonl), so that all of them report the same numbers under the same keys.
//
// Classification, from the confusion matrix C[t][p] (truth t, prediction p) over n examples:
//   accuracy  = sum_k C[k][k] / n
//   per class k: precision_k = C[k][k] / p_k, recall_k = C[k][k] / t_k, support_k = t_k,
//                F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) = 2 C[k][k] / (t_k + p_k)   (t_k true count, p_k predicted)
//   f1_macro  = mean of F1_k over the classes that occur in truth or predictions (as scikit-learn does without an
//               explicit label list; classes that never occur would otherwise add meaningless zeros)
//   f1        = F1_1 for two classes (class 1 is "positive"), f1_macro for more
//   mcc       = two classes: (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))               (Matthews)
//               more:        (c n - sum_k p_k t_k) / sqrt((n^2 - sum_k p_k^2)(n^2 - sum_k t_k^2))  (Gorodkin's R_K,
//               c = correct), which equals the binary formula for K = 2.
// Two classes only, from the score s_i = P(class 1) of each example:
//   roc_auc   = P(s of a random positive > s of a random negative), ties counted 1/2 (the Mann-Whitney U statistic
//               over n_pos * n_neg pairs); undefined when either class is absent.
//   pr_auc    = average precision: AP = sum over distinct scores s, highest first, of (R(s) - R(s_prev)) * P(s),
//               where P(s) and R(s) are the precision and recall of predicting positive for every score >= s (tied
//               scores enter together; no interpolation; scikit-learn's average_precision_score). Undefined when
//               there is no positive.
// Degenerate cases: a zero denominator gives 0 (precision / recall / F1 of a class that never occurs; MCC when all
// truths or all predictions fall in one class), as scikit-learn reports them; undefined AUCs are NaN (null in JSON).
//
// Language models, over n scored next-token predictions with total cross-entropy L nats and B bytes of target
// text (what each target token stands for in the original text: train/inference.h token_text_bytes):
//   loss = L / n, perplexity = exp(loss), bits_per_token = loss / ln 2, bits_per_byte = L / (B ln 2)
//   (bits_per_byte is NaN when the tokens are not text, as in selective copying, or B is 0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::train {

struct ClassificationMetrics {
  double accuracy = 0, f1 = 0, mcc = 0;
  int64_t n = 0;
};

// Throws mt::Error(Shape) when the vectors differ in length or num_classes < 2, and mt::Error(Data) naming the
// position when a label is outside [0, num_classes).
ClassificationMetrics classification_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& truth,
                                             int64_t num_classes);

// Area under the ROC curve and average precision (definitions above) of scores against binary truths (nonzero =
// positive). NaN when undefined. Throws mt::Error(Shape) when the lengths differ.
double roc_auc(const std::vector<double>& scores, const std::vector<int64_t>& positive);
double average_precision(const std::vector<double>& scores, const std::vector<int64_t>& positive);

struct ClassMetrics {
  std::string label;
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;
};

struct ClassificationReport {
  int64_t n = 0;
  double accuracy = 0, f1 = 0, f1_macro = 0, mcc = 0;
  std::vector<ClassMetrics> per_class;          // in class order
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class]
  double roc_auc = 0, pr_auc = 0;               // two classes only (NaN when undefined)
  std::vector<std::string> labels;              // class names, in class order
};

// Accumulates (probabilities, true class) rows and reports every classification metric. The predicted class is
// the first class with the highest probability.
class ClassificationEvaluator {
 public:
  explicit ClassificationEvaluator(std::vector<std::string> labels);  // >= 2 names
  // probs: num_classes values; truth in [0, num_classes) (mt::Error(Data) otherwise).
  void add(const double* probs, int64_t truth);
  ClassificationReport report() const;
  int64_t size() const { return static_cast<int64_t>(truth_.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(labels_.size()); }

 private:
  std::vector<std::string> labels_;
  std::vector<int64_t> truth_, predicted_;
  std::vector<double> positive_score_;  // two classes: P(class 1)
};

// The first index of the largest value (a NaN row predicts class 0).
int64_t argmax(const double* v, int64_t n);
// Softmax of one row of logits, in double with the maximum subtracted; returns log(sum exp(logit - max)) + max
// (the log-partition, so that -log p_k = lse - logit_k).
double softmax_row(const double* logits, int64_t n, double* probs);

struct LanguageModelReport {
  int64_t n = 0;      // scored predictions
  double nats = 0;    // total cross-entropy
  int64_t bytes = 0;  // bytes of the scored target tokens; < 0 when the tokens are not text
  double loss() const;
  double perplexity() const;
  double bits_per_token() const;
  double bits_per_byte() const;  // NaN when bytes <= 0
};

// JSON objects with exactly the documented keys (NaN as null), in a fixed order:
//   classification: accuracy, f1, f1_macro, per_class [{label, precision, recall, f1, support}], mcc, confusion,
//                   roc_auc and pr_auc (two classes only), n
//   language model: loss, perplexity, bits_per_token, bits_per_byte (when the tokens are text), n
nlohmann::ordered_json to_json(const ClassificationReport& r);
nlohmann::ordered_json to_json(const LanguageModelReport& r);

// Readable multi-line tables of the same numbers (for the console).
std::string to_table(const ClassificationReport& r);
std::string to_table(const LanguageModelReport& r);

}  // namespace mt::train
