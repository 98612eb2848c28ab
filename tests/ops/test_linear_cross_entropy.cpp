// linear_cross_entropy (autograd/ops/linear_cross_entropy.h) against the unfused linear + cross_entropy, for every
// chunking; dtypes, edges, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/shape_ops.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::error_of;
using mt::test::randn64;

namespace {

// The loss and both gradients of linear_cross_entropy(h, w, t) (chunked) and of cross_entropy(linear(h, w), t).
struct LxRun {
  double loss;
  std::vector<double> gh, gw;
};

LxRun run_lx(const Tensor& h0, const Tensor& w0, const Tensor& t, int64_t ignore, int64_t chunk, bool fused) {
  Tensor h = h0.clone(), w = w0.clone();
  set_requires_grad(h);
  set_requires_grad(w);
  Tensor loss = fused ? linear_cross_entropy(h, w, t, ignore, chunk) : cross_entropy(linear(h, w), t, ignore);
  backward(mul_scalar(loss, 1.7));  // an upstream gradient other than 1
  return {loss.item(), grad(h).to_vector(), grad(w).to_vector()};
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

Tensor targets_every_fifth_ignored(int64_t N, int64_t V, uint64_t seed, int64_t ignore = kIgnoreIndex) {
  Generator g(seed);
  std::vector<int64_t> t = Tensor::randint({N}, g, 0, V).to_vector_i64();
  for (int64_t i = 2; i < N; i += 5) t[i] = ignore;
  return Tensor::from_vector_i64(t, {N});
}

}  // namespace

TEST(LinearCrossEntropy, MatchesUnfusedForEveryChunking) {
  struct Case {
    int64_t N, H, V;
  };
  for (Case c : {Case{1, 1, 1}, Case{7, 5, 3}, Case{23, 16, 97}, Case{64, 9, 1000}}) {
    Tensor h = randn64({c.N, c.H}, 10 + c.N), w = randn64({c.V, c.H}, 20 + c.V, 0.5);
    Tensor t = targets_every_fifth_ignored(c.N, c.V, 30 + c.N);
    const LxRun ref = run_lx(h, w, t, kIgnoreIndex, 0, false);
    for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{3}, c.N, c.N + 5}) {
      const LxRun got = run_lx(h, w, t, kIgnoreIndex, chunk, true);
      const std::string what =
          "N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) + " chunk=" + std::to_string(chunk);
      EXPECT_NEAR(got.loss, ref.loss, 1e-12 * (1 + std::fabs(ref.loss))) << what;
      EXPECT_LE(max_abs_diff(got.gh, ref.gh), 1e-13) << what;
      EXPECT_LE(max_abs_diff(got.gw, ref.gw), 1e-13) << what;
    }
  }
  // A custom ignore_index, i32 targets.
  Tensor h = randn64({11, 4}, 1), w = randn64({6, 4}, 2);
  Tensor t = targets_every_fifth_ignored(11, 6, 3, 5);
  const LxRun ref = run_lx(h, w, t, 5, 0, false);
  const LxRun got = run_lx(h, w, t.to(DType::I32), 5, 4, true);
  EXPECT_NEAR(got.loss, ref.loss, 1e-12);
  EXPECT_LE(max_abs_diff(got.gw, ref.gw), 1e-13);
}

TEST(LinearCrossEntropy, DtypesAndNoGrad) {
  Tensor h = randn64({19, 8}, 4), w = randn64({33, 8}, 5);
  Tensor t = targets_every_fifth_ignored(19, 33, 6);
  const double ref = cross_entropy(linear(h, w), t).item();
  Tensor l32 = linear_cross_entropy(h.to(DType::F32), w.to(DType::F32), t, kIgnoreIndex, 4);
  EXPECT_EQ(l32.dtype(), DType::F32);
  EXPECT_NEAR(l32.item(), ref, 1e-5 * std::fabs(ref));
  Tensor l16 = linear_cross_entropy(h.to(DType::BF16), w.to(DType::BF16), t, kIgnoreIndex, 4);
  EXPECT_EQ(l16.dtype(), DType::F32);
  EXPECT_NEAR(l16.item(), ref, 3e-2 * std::fabs(ref));
  // Without a tape the forward computes the loss only; same value.
  NoGradGuard ng;
  EXPECT_NEAR(linear_cross_entropy(h, w, t, kIgnoreIndex, 4).item(),
              linear_cross_entropy(h, w, t, kIgnoreIndex, 19).item(), 1e-14);
  EXPECT_NEAR(linear_cross_entropy(h, w, t).item(), ref, 1e-12);
}

TEST(LinearCrossEntropy, EdgesAndErrors) {
  // Every row ignored: loss 0 and zero gradients.
  Tensor h = randn64({3, 4}, 1), w = randn64({5, 4}, 2);
  set_requires_grad(h);
  set_requires_grad(w);
  Tensor l = linear_cross_entropy(h, w, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}),
                                  kIgnoreIndex, 2);
  EXPECT_EQ(l.item(), 0.0);
  backward(l);
  EXPECT_EQ(grad(h).to_vector(), std::vector<double>(12, 0.0));
  EXPECT_EQ(grad(w).to_vector(), std::vector<double>(20, 0.0));
  // No rows at all.
  EXPECT_EQ(linear_cross_entropy(Tensor::zeros({0, 4}, DType::F64), w.detach(), Tensor::zeros({0}, DType::I64)).item(),
            0.0);
  // V = 1: every row's loss is 0.
  EXPECT_NEAR(
      linear_cross_entropy(randn64({3, 2}, 3), randn64({1, 2}, 4), Tensor::from_vector_i64({0, 0, 0}, {3})).item(), 0.0,
      1e-15);

  Tensor x = Tensor::zeros({3, 4}), wt = Tensor::zeros({6, 4});
  ErrorKind kind = ErrorKind::Internal;
  std::string m = error_of([&] { linear_cross_entropy(x, wt, Tensor::from_vector_i64({0, 6, 1}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("target 6"), std::string::npos) << m;
  EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  m = error_of([&] { linear_cross_entropy(x, wt, Tensor::from_vector_i64({0, 1, -3}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("row 2"), std::string::npos) << m;
  kind = ErrorKind::Internal;
  m = error_of([&] { linear_cross_entropy(x, Tensor::zeros({6, 5}), Tensor::from_vector_i64({0, 1, 2}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Shape);
  EXPECT_NE(m.find("weight must be [V, 4]"), std::string::npos) << m;
  EXPECT_THROW(linear_cross_entropy(x, wt.to(DType::F64), Tensor::from_vector_i64({0, 1, 2}, {3})), Error);
  EXPECT_THROW(linear_cross_entropy(x, wt, Tensor::from_vector_i64({0, 1}, {2})), Error);
  EXPECT_THROW(linear_cross_entropy(x, wt, Tensor::zeros({3})), Error);
  EXPECT_THROW(linear_cross_entropy(x, wt, Tensor::from_vector_i64({0, 1, 2}, {3}), kIgnoreIndex, -1), Error);
}
