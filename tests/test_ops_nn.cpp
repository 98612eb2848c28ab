// embedding, log_softmax, cross_entropy and linear_cross_entropy (autograd/ops/nn_ops.h).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/nn_ops.h"
#include "autograd/ops/shape_ops.h"
#include "test_util.h"

using namespace mt;

namespace {

Tensor randn64(const Shape& s, uint64_t seed, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F64);
}

std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OpsNn, EmbeddingValues) {
  Tensor w = Tensor::from_vector({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor ids = Tensor::from_vector_i64({2, 0, 2, 1}, {2, 2}, DType::I32);
  Tensor e = embedding(w, ids);
  EXPECT_EQ(e.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(e.to_vector(), (std::vector<double>{20, 21, 0, 1, 20, 21, 10, 11}));
  Tensor e64 = embedding(w.to(DType::BF16), Tensor::from_vector_i64({1}, {}));  // scalar id -> [d]
  EXPECT_EQ(e64.shape(), (Shape{2}));
  EXPECT_EQ(e64.dtype(), DType::BF16);
  EXPECT_EQ(e64.to_vector(), (std::vector<double>{10, 11}));
}

TEST(OpsNn, EmbeddingBackwardScatterAddsRepeatedIds) {
  Tensor w = randn64({5, 3}, 1);
  set_requires_grad(w);
  Tensor ids = Tensor::from_vector_i64({4, 1, 4, 4}, {4});
  Tensor y = embedding(w, ids);
  backward(y, Tensor::ones({4, 3}, DType::F64));
  EXPECT_EQ(grad(w).to_vector(), (std::vector<double>{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 3, 3, 3}));

  auto f = [](const std::vector<Tensor>& v) { return embedding(v[0], v[1]); };
  EXPECT_GRADCHECK(gradcheck(f, {randn64({6, 4}, 2), Tensor::from_vector_i64({5, 0, 5, 2, 0, 5}, {2, 3})}));
  EXPECT_GRADCHECK(gradcheck(f, {randn64({6, 4}, 3), Tensor::from_vector_i64({1, 1, 3}, {3}, DType::I32)}));
}

TEST(OpsNn, EmbeddingBadIdNamesIdPositionAndVocab) {
  Tensor w = Tensor::zeros({10, 4});
  ErrorKind kind = ErrorKind::Internal;
  std::string m = error_of([&] { embedding(w, Tensor::from_vector_i64({1, 2, 3, 4, 5, 12}, {2, 3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("12"), std::string::npos) << m;
  EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
  EXPECT_NE(m.find("[0, 10)"), std::string::npos) << m;
  m = error_of([&] { embedding(w, Tensor::from_vector_i64({-1}, {1}, DType::I32)); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("-1"), std::string::npos) << m;
  EXPECT_THROW(embedding(w, Tensor::zeros({2})), Error);                                   // float ids
  EXPECT_THROW(embedding(Tensor::zeros({10}), Tensor::from_vector_i64({1}, {1})), Error);  // 1-D weight
}

TEST(OpsNn, LogSoftmaxValues) {
  Tensor x = Tensor::from_vector({1, 2, 3, 1000, 1000, 1000}, {2, 3}, DType::F64);
  Tensor y = log_softmax(x, -1);
  std::vector<double> v = y.to_vector();
  const double l = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(v[0], 1 - l, 1e-12);
  EXPECT_NEAR(v[2], 3 - l, 1e-12);
  EXPECT_NEAR(v[3], -std::log(3.0), 1e-12);  // large values: max subtracted, no overflow
  // dim 0 of a [2, 3]: each column normalised.
  Tensor y0 = log_softmax(x, 0);
  std::vector<double> v0 = y0.to_vector();
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(std::exp(v0[c]) + std::exp(v0[3 + c]), 1.0, 1e-12);
  EXPECT_EQ(log_softmax(Tensor::from_vector({5}, {1})).to_vector(), (std::vector<double>{0}));  // C = 1
  Tensor f = log_softmax(x.to(DType::F32));
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_CLOSE(f, y, 1e-5, 1e-5);
  EXPECT_LT(test::rel_l2(log_softmax(x.to(DType::BF16)).to_vector(), v), 1e-2);
}

TEST(OpsNn, LogSoftmaxGradcheck) {
  auto f = [](int64_t d) { return [d](const std::vector<Tensor>& v) { return log_softmax(v[0], d); }; };
  EXPECT_GRADCHECK(gradcheck(f(-1), {randn64({3, 5}, 1)}));
  EXPECT_GRADCHECK(gradcheck(f(0), {randn64({3, 5}, 2)}));
  EXPECT_GRADCHECK(gradcheck(f(1), {randn64({2, 4, 3}, 3)}));
  EXPECT_GRADCHECK(gradcheck(f(-1), {randn64({4, 1}, 4)}));
  auto ft = [](const std::vector<Tensor>& v) { return log_softmax(transpose(v[0], 0, 1), -1); };
  EXPECT_GRADCHECK(gradcheck(ft, {randn64({4, 3}, 5)}));
}

TEST(OpsNn, CrossEntropyValuesIgnoreIndexAndMean) {
  Tensor x = randn64({4, 5}, 1, 2.0);
  Tensor t = Tensor::from_vector_i64({3, -100, 0, 4}, {4});
  Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::F64);
  std::vector<double> ls = log_softmax(x, -1).to_vector();
  const double ref = -(ls[0 * 5 + 3] + ls[2 * 5 + 0] + ls[3 * 5 + 4]) / 3.0;
  EXPECT_NEAR(loss.item(), ref, 1e-12);
  // f32 logits give an f32 scalar; bf16 logits too.
  Tensor l32 = cross_entropy(x.to(DType::F32), t.to(DType::I32));
  EXPECT_EQ(l32.dtype(), DType::F32);
  EXPECT_NEAR(l32.item(), ref, 1e-5);
  Tensor l16 = cross_entropy(x.to(DType::BF16), t);
  EXPECT_EQ(l16.dtype(), DType::F32);
  EXPECT_NEAR(l16.item(), ref, 3e-2 * std::fabs(ref));
  // Custom ignore_index, and every row ignored -> 0 with a zero gradient.
  EXPECT_NEAR(cross_entropy(x, Tensor::from_vector_i64({3, 7, 0, 4}, {4}), 7).item(), ref, 1e-12);
  Tensor xa = randn64({2, 3}, 2);
  set_requires_grad(xa);
  Tensor la = cross_entropy(xa, Tensor::from_vector_i64({-100, -100}, {2}));
  EXPECT_EQ(la.item(), 0.0);
  backward(la);
  EXPECT_EQ(grad(xa).to_vector(), std::vector<double>(6, 0.0));
  // C = 1: log_softmax is 0, so the loss is 0.
  EXPECT_NEAR(cross_entropy(randn64({3, 1}, 3), Tensor::from_vector_i64({0, 0, 0}, {3})).item(), 0.0, 1e-15);
}

TEST(OpsNn, CrossEntropyGradcheck) {
  auto f = [](const std::vector<Tensor>& v) { return cross_entropy(v[0], v[1]); };
  EXPECT_GRADCHECK(gradcheck(f, {randn64({5, 4}, 1), Tensor::from_vector_i64({1, -100, 3, 0, -100}, {5})}));
  EXPECT_GRADCHECK(gradcheck(f, {randn64({3, 7}, 2), Tensor::from_vector_i64({6, 6, 2}, {3}, DType::I32)}));
  EXPECT_GRADCHECK(gradcheck(f, {randn64({2, 1}, 3), Tensor::from_vector_i64({0, 0}, {2})}));
  // Through a strided view of the logits (transposed [C, N]).
  auto ft = [](const std::vector<Tensor>& v) { return cross_entropy(transpose(v[0], 0, 1), v[1]); };
  EXPECT_GRADCHECK(gradcheck(ft, {randn64({4, 3}, 4), Tensor::from_vector_i64({2, 0, 3}, {3})}));
}

TEST(OpsNn, CrossEntropyErrors) {
  Tensor x = Tensor::zeros({3, 4});
  ErrorKind kind = ErrorKind::Internal;
  std::string m = error_of([&] { cross_entropy(x, Tensor::from_vector_i64({0, 4, 1}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("target 4"), std::string::npos) << m;
  EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  m = error_of([&] { cross_entropy(x, Tensor::from_vector_i64({0, 1, -5}, {3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("target -5"), std::string::npos) << m;
  EXPECT_NE(m.find("row 2"), std::string::npos) << m;
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector_i64({0, 1}, {2})), Error);  // N mismatch
  EXPECT_THROW(cross_entropy(Tensor::zeros({2, 3, 4}), Tensor::from_vector_i64({0, 1}, {2})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::zeros({3})), Error);  // float targets
}

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

Tensor targets_every_fifth_ignored(int64_t N, int64_t V, uint64_t seed, int64_t ignore = -100) {
  Generator g(seed);
  std::vector<int64_t> t = Tensor::randint({N}, g, 0, V).to_vector_i64();
  for (int64_t i = 2; i < N; i += 5) t[i] = ignore;
  return Tensor::from_vector_i64(t, {N});
}

}  // namespace

TEST(OpsNn, LinearCrossEntropyMatchesUnfusedForEveryChunking) {
  struct Case {
    int64_t N, H, V;
  };
  for (Case c : {Case{1, 1, 1}, Case{7, 5, 3}, Case{23, 16, 97}, Case{64, 9, 1000}}) {
    Tensor h = randn64({c.N, c.H}, 10 + c.N), w = randn64({c.V, c.H}, 20 + c.V, 0.5);
    Tensor t = targets_every_fifth_ignored(c.N, c.V, 30 + c.N);
    const LxRun ref = run_lx(h, w, t, -100, 0, false);
    for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{3}, c.N, c.N + 5}) {
      const LxRun got = run_lx(h, w, t, -100, chunk, true);
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

TEST(OpsNn, LinearCrossEntropyDtypesAndNoGrad) {
  Tensor h = randn64({19, 8}, 4), w = randn64({33, 8}, 5);
  Tensor t = targets_every_fifth_ignored(19, 33, 6);
  const double ref = cross_entropy(linear(h, w), t).item();
  Tensor l32 = linear_cross_entropy(h.to(DType::F32), w.to(DType::F32), t, -100, 4);
  EXPECT_EQ(l32.dtype(), DType::F32);
  EXPECT_NEAR(l32.item(), ref, 1e-5 * std::fabs(ref));
  Tensor l16 = linear_cross_entropy(h.to(DType::BF16), w.to(DType::BF16), t, -100, 4);
  EXPECT_EQ(l16.dtype(), DType::F32);
  EXPECT_NEAR(l16.item(), ref, 3e-2 * std::fabs(ref));
  // Without a tape the forward computes the loss only; same value.
  NoGradGuard ng;
  EXPECT_NEAR(linear_cross_entropy(h, w, t, -100, 4).item(), linear_cross_entropy(h, w, t, -100, 19).item(), 1e-14);
  EXPECT_NEAR(linear_cross_entropy(h, w, t).item(), ref, 1e-12);
}

TEST(OpsNn, LinearCrossEntropyGradcheck) {
  auto f = [](int64_t chunk) {
    return [chunk](const std::vector<Tensor>& v) { return linear_cross_entropy(v[0], v[1], v[2], -100, chunk); };
  };
  EXPECT_GRADCHECK(
      gradcheck(f(2), {randn64({5, 3}, 1), randn64({4, 3}, 2), Tensor::from_vector_i64({1, -100, 3, 0, 2}, {5})}));
  EXPECT_GRADCHECK(
      gradcheck(f(0), {randn64({3, 1}, 3), randn64({7, 1}, 4), Tensor::from_vector_i64({6, 6, 2}, {3}, DType::I32)}));
  // Through strided views of h and the weight.
  auto ft = [](const std::vector<Tensor>& v) {
    return linear_cross_entropy(transpose(v[0], 0, 1), transpose(v[1], 0, 1), v[2], -100, 2);
  };
  EXPECT_GRADCHECK(gradcheck(ft, {randn64({3, 4}, 5), randn64({3, 5}, 6), Tensor::from_vector_i64({4, 0, 1, 3}, {4})}));
}

TEST(OpsNn, LinearCrossEntropyEdgesAndErrors) {
  // Every row ignored: loss 0 and zero gradients.
  Tensor h = randn64({3, 4}, 1), w = randn64({5, 4}, 2);
  set_requires_grad(h);
  set_requires_grad(w);
  Tensor l = linear_cross_entropy(h, w, Tensor::from_vector_i64({-100, -100, -100}, {3}), -100, 2);
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
  EXPECT_THROW(linear_cross_entropy(x, wt, Tensor::from_vector_i64({0, 1, 2}, {3}), -100, -1), Error);
}
