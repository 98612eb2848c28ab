// Classification metrics for evaluation logs (sequence / token classification heads).
//
// From the confusion matrix C[t][p] (truth t, prediction p) over n examples:
//   accuracy = sum_k C[k][k] / n
//   per-class F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) = 2 C[k][k] / (t_k + p_k)   (t_k true count, p_k predicted)
// Binary (num_classes == 2), class 1 is "positive":
//   f1  = F1_1
//   mcc = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))                    (Matthews)
// Multiclass (num_classes > 2):
//   f1  = macro-F1: mean of F1_k over the classes that occur in truth or predictions (as scikit-learn does
//         without an explicit label list; classes that never occur would otherwise add meaningless zeros)
//   mcc = (c n - sum_k p_k t_k) / sqrt((n^2 - sum_k p_k^2)(n^2 - sum_k t_k^2))    (Gorodkin's R_K, c = correct)
//   which equals the binary formula for K = 2.
// Degenerate cases: a zero denominator gives 0 (F1 of a class that never occurs; MCC when all truths or all
// predictions fall in one class), as scikit-learn reports them. Empty input: n = 0 and all metrics 0.
#pragma once

#include <cstdint>
#include <vector>

namespace mt::train {

struct ClassificationMetrics {
  double accuracy = 0, f1 = 0, mcc = 0;
  int64_t n = 0;
};

// Throws mt::Error(Shape) when the vectors differ in length or num_classes < 2, and mt::Error(Data) naming the
// position when a label is outside [0, num_classes).
ClassificationMetrics classification_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& truth,
                                             int64_t num_classes);

}  // namespace mt::train
