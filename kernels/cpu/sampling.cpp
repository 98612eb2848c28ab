// CPU reference of token sampling (math in kernels/sampling.h): thresholds by sorting the keys, the draw by a walk
// in id order.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/detail/decode_math.h"
#include "kernels/sampling.h"

namespace mt::kernels {

using decode::order_key;

namespace {

// The largest key t with (sum of weight over keys >= t) >= target, from (key, weight) pairs sorted by descending
// key. target >= 1 and the total weight >= target.
uint32_t select_threshold(const std::vector<std::pair<uint32_t, uint64_t>>& sorted, uint64_t target) {
  uint64_t cum = 0;
  for (size_t i = 0; i < sorted.size();) {
    const uint32_t key = sorted[i].first;
    for (; i < sorted.size() && sorted[i].first == key; ++i) cum += sorted[i].second;
    if (cum >= target) return key;
  }
  return sorted.empty() ? 0u : sorted.back().first;
}

int64_t sample_row(const SampleParams& p, int64_t b) {
  const int64_t V = p.V;
  const float* lg = p.logits + b * V;
  const uint32_t* seen = p.seen ? p.seen + b * p.seen_words : nullptr;
  std::vector<float> l(static_cast<size_t>(V));
  std::vector<uint32_t> key(static_cast<size_t>(V));
  int64_t best = 0;
  for (int64_t v = 0; v < V; ++v) {
    const bool s = seen && ((seen[v >> 5] >> (v & 31)) & 1u);
    l[v] = decode::scaled_logit(lg[v], s, p.repetition_penalty, p.temperature);
    key[v] = order_key(l[v]);
    if (key[v] > key[best]) best = v;
  }
  if (p.temperature == 0.0f || key[best] == 0u) return best;  // greedy (or every logit NaN)
  const float max_l = l[best];
  std::vector<uint64_t> q(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) q[v] = decode::token_weight(l[v], max_l, key[v]);

  std::vector<std::pair<uint32_t, uint64_t>> sorted(static_cast<size_t>(V));
  uint32_t t = 0;
  if (p.top_k > 0 && p.top_k < V) {
    for (int64_t v = 0; v < V; ++v) sorted[v] = {key[v], 1};
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& c) { return a.first > c.first; });
    t = select_threshold(sorted, static_cast<uint64_t>(p.top_k));
  }
  if (p.top_p < 1.0) {
    uint64_t total = 0;
    for (int64_t v = 0; v < V; ++v) {
      sorted[v] = {key[v], key[v] >= t ? q[v] : 0};
      total += sorted[v].second;
    }
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& c) { return a.first > c.first; });
    t = std::max(t, select_threshold(sorted, std::max<uint64_t>(decode::top_p_target(p.top_p, total), 1)));
  }
  uint64_t kept = 0;
  for (int64_t v = 0; v < V; ++v) kept += key[v] >= t ? q[v] : 0;
  const uint64_t target = decode::draw_target(decode::sample_uniform(p.seed, *p.step, p.row_ids[b]), kept);
  uint64_t cum = 0;
  for (int64_t v = 0; v < V; ++v) {
    if (key[v] < t) continue;
    cum += q[v];
    if (cum > target) return v;
  }
  return best;  // not reached: cum ends at kept > target
}

}  // namespace

void sample_check_options(double temperature, int64_t top_k, double top_p, double repetition_penalty) {
  MT_CHECK(std::isfinite(temperature) && temperature >= 0.0, ErrorKind::Usage,
           "sampling: temperature must be a finite number >= 0, got ", temperature);
  MT_CHECK(top_k >= 0, ErrorKind::Usage, "sampling: top-k must be >= 0, got ", top_k);
  MT_CHECK(top_p > 0.0 && top_p <= 1.0, ErrorKind::Usage, "sampling: top-p must be in (0, 1], got ", top_p);
  MT_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0, ErrorKind::Usage,
           "sampling: repetition penalty must be a finite number > 0, got ", repetition_penalty);
}

void sample_check(const SampleParams& p) {
  sample_check_options(p.temperature, p.top_k, p.top_p, p.repetition_penalty);
  MT_ASSERT(p.B >= 0 && p.V >= 1 && p.logits && p.tokens && p.step && p.row_ids, "sample: missing buffers");
  MT_ASSERT(!p.seen || p.seen_words == (p.V + 31) / 32, "sample: seen_words ", p.seen_words, " for V ", p.V);
  MT_ASSERT(p.seen || p.repetition_penalty == 1.0f, "sample: a repetition penalty needs the seen mask");
}

void sample_cpu(const SampleParams& p) {
  sample_check(p);
  const int64_t step = *p.step;
#pragma omp parallel for schedule(static) if (p.B > 1)
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t tok = sample_row(p, b);
    p.tokens[b] = tok;
    if (p.history && step >= 0 && step < p.history_len) p.history[b * p.history_len + step] = tok;
    if (p.seen) p.seen[b * p.seen_words + (tok >> 5)] |= 1u << (tok & 31);
  }
}

}  // namespace mt::kernels
