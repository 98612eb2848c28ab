// Token sampling (kernels/sampling.h) on hand-made logits: greedy, repetition penalty, temperature, top-k, top-p, the
// draw itself and its reproducibility.
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "kernels/detail/decode_math.h"
#include "kernels/sampling.h"
#include "test_util.h"

using namespace mt;
using namespace mt::kernels;

namespace {

struct Options {
  float temperature = 1.0f;
  int64_t top_k = 0;
  double top_p = 1.0;
  float penalty = 1.0f;
  uint64_t seed = 0;
  int64_t step = 0;
};

// Draw one token for each of `rows` copies of `logits` (row ids first_row, first_row + 1, ...).
std::vector<int64_t> draw(const std::vector<float>& logits, int64_t rows, const Options& o,
                          std::vector<uint32_t>* seen = nullptr, int64_t first_row = 0,
                          std::vector<int64_t>* history = nullptr, int64_t history_len = 0) {
  const int64_t V = static_cast<int64_t>(logits.size());
  std::vector<float> all;
  for (int64_t r = 0; r < rows; ++r) all.insert(all.end(), logits.begin(), logits.end());
  std::vector<int64_t> row_ids(static_cast<size_t>(rows)), tokens(static_cast<size_t>(rows), -1);
  for (int64_t r = 0; r < rows; ++r) row_ids[r] = first_row + r;
  SampleParams p;
  p.B = rows;
  p.V = V;
  p.logits = all.data();
  p.seen = seen ? seen->data() : nullptr;
  p.seen_words = (V + 31) / 32;
  p.temperature = o.temperature;
  p.top_k = o.top_k;
  p.top_p = o.top_p;
  p.repetition_penalty = o.penalty;
  p.seed = o.seed;
  p.row_ids = row_ids.data();
  p.step = &o.step;
  p.tokens = tokens.data();
  p.history = history ? history->data() : nullptr;
  p.history_len = history_len;
  sample_cpu(p);
  return tokens;
}

std::map<int64_t, int64_t> histogram(const std::vector<int64_t>& t) {
  std::map<int64_t, int64_t> h;
  for (int64_t v : t) ++h[v];
  return h;
}

}  // namespace

TEST(Sampling, GreedyTakesTheFirstLargestLogitAndNeverANaN) {
  Options g;
  g.temperature = 0.0f;
  EXPECT_EQ(draw({0.5f, 3.0f, -1.0f, 3.0f}, 1, g)[0], 1);
  EXPECT_EQ(draw({-INFINITY, -5.0f, -INFINITY}, 1, g)[0], 1);
  EXPECT_EQ(draw({NAN, -100.0f, NAN}, 1, g)[0], 1);
  EXPECT_EQ(draw({NAN, NAN}, 1, g)[0], 0);
  EXPECT_EQ(draw({1.0f, INFINITY, 2.0f}, 1, g)[0], 1);
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenTokens) {
  Options g;
  g.temperature = 0.0f;
  g.penalty = 2.0f;
  // Token 0 seen: 3.0 / 2 = 1.5 < 2.0, so token 1 wins.
  std::vector<uint32_t> seen = {1u};
  EXPECT_EQ(draw({3.0f, 2.0f, -1.0f}, 1, g, &seen)[0], 1);
  // Token 0 seen with a negative logit: -1 * 2 = -2 < -1.5.
  seen = {1u};
  EXPECT_EQ(draw({-1.0f, -1.5f}, 1, g, &seen)[0], 1);
  // The chosen token is marked as seen.
  EXPECT_EQ(seen[0], 3u);
  // A penalty below 1 favours seen tokens.
  g.penalty = 0.25f;
  seen = {2u};
  EXPECT_EQ(draw({3.0f, 1.0f}, 1, g, &seen)[0], 1);
  // Token ids past 31 live in the next word of the mask.
  std::vector<float> wide(40, 0.0f);
  wide[35] = 5.0f;
  wide[3] = 4.0f;
  seen = {0u, 1u << 3};
  g.penalty = 4.0f;
  EXPECT_EQ(draw(wide, 1, g, &seen)[0], 3);
}

TEST(Sampling, TheDrawWalksTheWeightsInIdOrder) {
  // Two equal logits weigh 2^31 each: the token is 1 exactly when u * 2^32 >= 2^31, i.e. u >= 0.5.
  Options o;
  o.seed = 1234;
  for (int64_t step = 0; step < 8; ++step) {
    o.step = step;
    const std::vector<int64_t> t = draw({0.25f, 0.25f}, 16, o);
    for (int64_t r = 0; r < 16; ++r) {
      const float u = decode::sample_uniform(o.seed, step, r);
      EXPECT_EQ(t[r], u >= 0.5f ? 1 : 0) << "step " << step << " row " << r << " u " << u;
    }
  }
}

TEST(Sampling, FrequenciesFollowTheSoftmaxAndTheTemperature) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const int64_t n = 20000;
  Options o;
  o.seed = 7;
  auto h = histogram(draw(logits, n, o));
  EXPECT_NEAR(h[0] / double(n), 0.5, 0.015);
  EXPECT_NEAR(h[1] / double(n), 0.3, 0.015);
  EXPECT_NEAR(h[2] / double(n), 0.2, 0.015);
  // Temperature 2: probabilities proportional to sqrt(p).
  o.temperature = 2.0f;
  h = histogram(draw(logits, n, o));
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  EXPECT_NEAR(h[0] / double(n), std::sqrt(0.5) / z, 0.015);
  EXPECT_NEAR(h[2] / double(n), std::sqrt(0.2) / z, 0.015);
  // A very low temperature is greedy in effect.
  o.temperature = 0.01f;
  h = histogram(draw(logits, 2000, o));
  EXPECT_EQ(h[0], 2000);
}

TEST(Sampling, TopKKeepsTheKLargestAndEveryTieAtTheBoundary) {
  Options o;
  o.seed = 3;
  o.top_k = 2;
  auto h = histogram(draw({1.0f, 3.0f, 2.0f, 0.0f, 2.5f}, 4000, o));
  EXPECT_EQ(h.count(0) + h.count(2) + h.count(3), 0u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[4], 0);
  EXPECT_NEAR(h[1] / 4000.0, 1.0 / (1.0 + std::exp(-0.5)), 0.03);
  // Ties at the k-th largest logit are all kept.
  h = histogram(draw({3.0f, 2.0f, 2.0f, 0.0f}, 4000, o));
  EXPECT_EQ(h.count(3), 0u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[2], 0);
  // top_k 1 is greedy; top_k >= V is off.
  o.top_k = 1;
  EXPECT_EQ(histogram(draw({1.0f, 3.0f, 2.0f}, 500, o))[1], 500);
  o.top_k = 3;
  EXPECT_EQ(histogram(draw({1.0f, 3.0f, 2.0f}, 2000, o)).size(), 3u);
}

TEST(Sampling, TopPKeepsTheSmallestHeadReachingTheMass) {
  const std::vector<float> logits = {std::log(0.05f), std::log(0.5f), std::log(0.15f), std::log(0.3f)};
  Options o;
  o.seed = 11;
  const int64_t n = 6000;
  o.top_p = 0.4;  // 0.5 alone reaches it
  EXPECT_EQ(histogram(draw(logits, n, o))[1], n);
  o.top_p = 0.6;  // 0.5 + 0.3
  auto h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.count(0) + h.count(2), 0u);
  EXPECT_NEAR(h[1] / double(n), 0.5 / 0.8, 0.02);
  o.top_p = 0.9;  // 0.5 + 0.3 + 0.15
  h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.count(0), 0u);
  EXPECT_NEAR(h[2] / double(n), 0.15 / 0.95, 0.02);
  // top-k first, then top-p on what is left: top_k 2 keeps {1, 3}; top_p 0.7 of 0.8 needs both.
  o.top_k = 2;
  o.top_p = 0.7;
  h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[3], 0);
  // top_k 2 with top_p 0.5: 0.5 / 0.8 = 0.625 >= 0.5 keeps token 1 alone.
  o.top_p = 0.5;
  EXPECT_EQ(histogram(draw(logits, n, o))[1], n);
}

TEST(Sampling, DrawsAreReproducibleAndDependOnSeedRowAndStepOnly) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.7f * static_cast<float>(i));
  Options o;
  o.seed = 99;
  o.step = 5;
  const auto a = draw(logits, 64, o);
  EXPECT_EQ(draw(logits, 64, o), a);
  // The same row ids in a different batch (rows 10..19 alone) draw the same tokens.
  const auto part = draw(logits, 10, o, nullptr, 10);
  EXPECT_EQ(part, std::vector<int64_t>(a.begin() + 10, a.begin() + 20));
  // Another seed or step changes the draws.
  Options o2 = o;
  o2.seed = 100;
  EXPECT_NE(draw(logits, 64, o2), a);
  o2 = o;
  o2.step = 6;
  EXPECT_NE(draw(logits, 64, o2), a);
}

TEST(Sampling, WritesTheHistoryColumnOfTheStep) {
  Options o;
  o.temperature = 0.0f;
  o.step = 2;
  std::vector<int64_t> hist(2 * 4, -1);
  draw({0.0f, 1.0f, 0.5f}, 2, o, nullptr, 0, &hist, 4);
  EXPECT_EQ(hist, (std::vector<int64_t>{-1, -1, 1, -1, -1, -1, 1, -1}));
  o.step = 4;  // past the end: nothing written
  draw({0.0f, 1.0f, 0.5f}, 2, o, nullptr, 0, &hist, 4);
  EXPECT_EQ(hist[3], -1);
}

TEST(Sampling, OutOfRangeOptionsAreUsageErrors) {
  auto code = [](double t, int64_t k, double p, double r) {
    try {
      sample_check_options(t, k, p, r);
    } catch (const Error& e) {
      return e.exit_code();
    }
    return 0;
  };
  EXPECT_EQ(code(0.0, 0, 1.0, 1.0), 0);
  EXPECT_EQ(code(-1.0, 0, 1.0, 1.0), 2);
  EXPECT_EQ(code(NAN, 0, 1.0, 1.0), 2);
  EXPECT_EQ(code(1.0, -1, 1.0, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 0.0, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.5, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.0, 0.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.0, INFINITY), 2);
  EXPECT_NE(test::error_of([] { sample_check_options(1.0, 0, 2.0, 1.0); }).find("top-p"), std::string::npos);
}
