// CPU tests of causal_conv1d: values against a naive loop written here, gradcheck through one output, streaming
// equivalence, dtypes, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/ops/causal_conv1d.h"
#include "kernels/causal_conv1d.h"
#include "tests/pack_outputs.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::pack_outputs;

namespace {

// y and final_state by the definition: xx = concat(init, x) along time; y[t] = b + sum_k w[k] xx[t + k].
void naive_conv(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>* bias,
                const std::vector<double>* init, int64_t B, int64_t L, int64_t D, int64_t K, bool silu,
                std::vector<double>& y, std::vector<double>& fin) {
  auto xx = [&](int64_t b, int64_t s, int64_t d) {
    if (s >= K - 1) return x[(b * L + s - (K - 1)) * D + d];
    return init ? (*init)[(b * (K - 1) + s) * D + d] : 0.0;
  };
  y.assign(B * L * D, 0.0);
  fin.assign(B * (K - 1) * D, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t d = 0; d < D; ++d) {
        double a = bias ? (*bias)[d] : 0.0;
        for (int64_t k = 0; k < K; ++k) a += w[d * K + k] * xx(b, t + k, d);
        y[(b * L + t) * D + d] = silu ? a / (1.0 + std::exp(-a)) : a;
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < K - 1; ++j)
      for (int64_t d = 0; d < D; ++d) fin[(b * (K - 1) + j) * D + d] = xx(b, L + j, d);
}

void expect_vec_near(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << what << " element " << i;
}

// Rows [t0, t0 + n) of a [B, L, D] tensor's values.
std::vector<double> time_rows(const Tensor& t, int64_t t0, int64_t n) {
  const int64_t B = t.size(0), L = t.size(1), D = t.size(2);
  std::vector<double> v = t.to_vector(), out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = t0; s < t0 + n; ++s)
      for (int64_t d = 0; d < D; ++d) out.push_back(v[(b * L + s) * D + d]);
  return out;
}

}  // namespace

TEST(CausalConv1d, MatchesNaiveLoop) {
  Generator gen(11);
  const int64_t B = 2, L = 9, D = 5;
  for (int64_t K : {1, 3, 4})
    for (int mask = 0; mask < 8; ++mask) {
      const bool use_bias = mask & 1, use_init = mask & 2, silu = mask & 4;
      for (DType dt : {DType::F64, DType::F32}) {
        Tensor x = Tensor::randn({B, L, D}, gen, 0, 1, dt);
        Tensor w = Tensor::randn({D, K}, gen, 0, 1, dt);
        Tensor b = use_bias ? Tensor::randn({D}, gen, 0, 1, dt) : Tensor();
        Tensor init = use_init ? Tensor::randn({B, K - 1, D}, gen, 0, 1, dt) : Tensor();
        auto out = causal_conv1d(x, w, b, init, silu);
        std::vector<double> bv = use_bias ? b.to_vector() : std::vector<double>();
        std::vector<double> iv = use_init ? init.to_vector() : std::vector<double>();
        std::vector<double> y, fin;
        naive_conv(x.to_vector(), w.to_vector(), use_bias ? &bv : nullptr, use_init ? &iv : nullptr, B, L, D, K, silu,
                   y, fin);
        EXPECT_EQ(out.y.shape(), (Shape{B, L, D}));
        EXPECT_EQ(out.final_state.shape(), (Shape{B, K - 1, D}));
        EXPECT_EQ(out.y.dtype(), dt);
        const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
        const std::string what = str("K=", K, " mask=", mask, " ", dtype_name(dt));
        expect_vec_near(out.y.to_vector(), y, tol, what + " y");
        expect_vec_near(out.final_state.to_vector(), fin, 0.0, what + " final_state");
      }
    }
}

TEST(CausalConv1d, HandComputed) {
  // One channel, K = 3, w = [1, 2, 3] (w[2] hits the current input), bias 0.5, init = [10, 20].
  Tensor x = Tensor::from_vector({1, 2, 3}, {1, 3, 1}, DType::F64);
  Tensor w = Tensor::from_vector({1, 2, 3}, {1, 3}, DType::F64);
  Tensor b = Tensor::from_vector({0.5}, {1}, DType::F64);
  Tensor init = Tensor::from_vector({10, 20}, {1, 2, 1}, DType::F64);
  auto out = causal_conv1d(x, w, b, init, false);
  // y0 = 10 + 40 + 3 + .5, y1 = 20 + 2 + 6 + .5, y2 = 1 + 4 + 9 + .5
  EXPECT_EQ(out.y.to_vector(), (std::vector<double>{53.5, 28.5, 14.5}));
  EXPECT_EQ(out.final_state.to_vector(), (std::vector<double>{2, 3}));
  auto z = causal_conv1d(x, w, Tensor(), Tensor(), false);  // zero history
  EXPECT_EQ(z.y.to_vector(), (std::vector<double>{3, 8, 14}));
}

TEST(CausalConv1d, GradcheckFinalStateOnly) {
  // A loss on final_state alone: its gradient reaches x (and initial_state when L < K-1) and nothing else.
  Generator gen(6);
  for (int64_t L : {1, 2, 9}) {
    std::vector<Tensor> in = {Tensor::randn({2, L, 3}, gen, 0, 1, DType::F64),
                              Tensor::randn({3, 4}, gen, 0, 1, DType::F64),
                              Tensor::randn({2, 3, 3}, gen, 0, 1, DType::F64)};
    auto f = [](const std::vector<Tensor>& t) { return causal_conv1d(t[0], t[1], Tensor(), t[2], true).final_state; };
    EXPECT_GRADCHECK(gradcheck(f, in));
  }
}

TEST(CausalConv1d, StreamingEqualsOneRun) {
  Generator gen(21);
  const int64_t B = 2, L = 9, D = 4;
  for (int64_t K : {1, 3, 4})
    for (bool silu : {false, true}) {
      Tensor x = Tensor::randn({B, L, D}, gen, 0, 1, DType::F64);
      Tensor w = Tensor::randn({D, K}, gen, 0, 1, DType::F64);
      Tensor b = Tensor::randn({D}, gen, 0, 1, DType::F64);
      Tensor init = Tensor::randn({B, K - 1, D}, gen, 0, 1, DType::F64);
      auto full = causal_conv1d(x, w, b, init, silu);
      auto chunk = [&](int64_t t0, int64_t n) { return x.as_strided({B, n, D}, {L * D, D, 1}, t0 * D).contiguous(); };
      const std::string what = str("K=", K, " silu=", silu);
      // 4 + 5
      auto a = causal_conv1d(chunk(0, 4), w, b, init, silu);
      auto c = causal_conv1d(chunk(4, 5), w, b, a.final_state, silu);
      expect_vec_near(a.y.to_vector(), time_rows(full.y, 0, 4), 1e-12, what + " chunk 4");
      expect_vec_near(c.y.to_vector(), time_rows(full.y, 4, 5), 1e-12, what + " chunk 5");
      expect_vec_near(c.final_state.to_vector(), full.final_state.to_vector(), 0.0, what + " final 4+5");
      // 1 by 1 (decode): state shorter than K-1 steps of new input comes partly from init.
      Tensor state = init;
      for (int64_t t = 0; t < L; ++t) {
        auto s = causal_conv1d(chunk(t, 1), w, b, state, silu);
        expect_vec_near(s.y.to_vector(), time_rows(full.y, t, 1), 1e-12, what + str(" step ", t));
        state = s.final_state;
      }
      expect_vec_near(state.to_vector(), full.final_state.to_vector(), 0.0, what + " final steps");
    }
}

TEST(CausalConv1d, MixedDtypes) {
  // bf16 activations with f32 weights (autocast): y / final_state / dx in bf16, dweight / dbias in f32.
  Generator gen(3);
  Tensor x = Tensor::randn({2, 5, 3}, gen, 0, 1, DType::BF16);
  Tensor w = Tensor::randn({3, 4}, gen, 0, 1, DType::F32);
  Tensor b = Tensor::randn({3}, gen, 0, 1, DType::F32);
  Tensor init = Tensor::randn({2, 3, 3}, gen, 0, 1, DType::BF16);
  set_requires_grad(x), set_requires_grad(w), set_requires_grad(b), set_requires_grad(init);
  auto o = causal_conv1d(x, w, b, init, true);
  EXPECT_EQ(o.y.dtype(), DType::BF16);
  EXPECT_EQ(o.final_state.dtype(), DType::BF16);
  backward(pack_outputs(o.y, o.final_state, DType::F32), Tensor::ones({2 * 5 * 3 + 2 * 3 * 3}, DType::F32));
  EXPECT_EQ(grad(x).dtype(), DType::BF16);
  EXPECT_EQ(grad(init).dtype(), DType::BF16);
  EXPECT_EQ(grad(w).dtype(), DType::F32);
  EXPECT_EQ(grad(b).dtype(), DType::F32);
  // Same numbers as the f32 computation on the bf16-rounded inputs.
  Tensor x32 = x.to(DType::F32), i32 = init.to(DType::F32);
  set_requires_grad(x32), set_requires_grad(i32);
  Tensor w2 = w.clone(), b2 = b.clone();
  set_requires_grad(w2), set_requires_grad(b2);
  auto r = causal_conv1d(x32, w2, b2, i32, true);
  backward(pack_outputs(r.y, r.final_state, DType::F32), Tensor::ones({2 * 5 * 3 + 2 * 3 * 3}, DType::F32));
  EXPECT_CLOSE(o.y.to(DType::F32), r.y, 1e-2, 1e-2);
  EXPECT_CLOSE(grad(w), grad(w2), 1e-6, 1e-6);
  EXPECT_CLOSE(grad(b), grad(b2), 1e-6, 1e-6);
  EXPECT_CLOSE(grad(x).to(DType::F32), grad(x32), 1e-2, 1e-2);
}

TEST(CausalConv1d, Errors) {
  Tensor x = Tensor::ones({2, 5, 3});
  Tensor w = Tensor::ones({3, 4});
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(Tensor::ones({5, 3}), w, Tensor(), Tensor(), false);
            }).find("[B, L, D]"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(x, Tensor::ones({4, 4}), Tensor(), Tensor(), false);
            }).find("weight must be [D, K]"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(x, Tensor::ones({3, 1, 4}), Tensor(), Tensor(), false);
            }).find("reshape"),
            std::string::npos);
  EXPECT_NE(
      test::shape_error_of([&] { causal_conv1d(x, w, Tensor::ones({4}), Tensor(), false); }).find("bias must be [3]"),
      std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(x, w, Tensor(), Tensor::ones({2, 4, 3}), false);
            }).find("initial_state"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] { causal_conv1d(x, w.to(DType::F64), Tensor(), Tensor(), false); }).find("or f32"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(x, w, Tensor(), Tensor::ones({2, 3, 3}, DType::F64), false);
            }).find("causal_conv1d"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              causal_conv1d(Tensor::ones({2, 5, 3}, DType::I64), w, Tensor(), Tensor(), false);
            }).find("float"),
            std::string::npos);
}

// The reverse conv (kernels/causal_conv1d.h) of a sequence equals the causal conv of the sequence flipped in time,
// flipped back: y, dx, dweight and dbias, bit for bit (the same operations in the same order), with document resets
// reversed as the flipped sequence sees them, silu and a bias.
template <typename T>
void check_reverse_conv(DType dt) {
  const int64_t B = 2, L = 11, D = 3, K = 4;
  std::mt19937_64 gen(5);
  auto rnd = [&](int64_t n) {
    std::uniform_real_distribution<double> dist(-1, 1);
    std::vector<T> v(static_cast<size_t>(n));
    for (T& x : v) x = static_cast<T>(dist(gen));
    return v;
  };
  const auto x = rnd(B * L * D), w = rnd(D * K), bias = rnd(D), dy = rnd(B * L * D);
  std::vector<int32_t> reset(static_cast<size_t>(B * L), 0);
  reset[0 * L + 5] = 1, reset[1 * L + 0] = 1, reset[1 * L + 2] = 1, reset[1 * L + 3] = 1, reset[1 * L + 9] = 1;
  auto flip = [&](const std::vector<T>& v) {
    std::vector<T> out(v.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t d = 0; d < D; ++d) out[(b * L + L - 1 - t) * D + d] = v[(b * L + t) * D + d];
    return out;
  };
  std::vector<int32_t> reset_rev(reset.size(), 0);  // rev[L - t] = reset[t] for t >= 1
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 1; t < L; ++t) reset_rev[b * L + L - t] = reset[b * L + t];
  struct Out {
    std::vector<T> y, dx, dw, db;
  };
  auto call = [&](bool reverse, const std::vector<T>& xx, const std::vector<int32_t>& rr, const std::vector<T>& gy) {
    Out o{std::vector<T>(B * L * D), std::vector<T>(B * L * D), std::vector<T>(D * K), std::vector<T>(D)};
    kernels::CausalConv1dFwdParams f;
    f.B = B, f.L = L, f.D = D, f.K = K, f.dtype = dt, f.w_dtype = dt, f.silu = true, f.reverse = reverse;
    f.x = xx.data(), f.weight = w.data(), f.bias = bias.data(), f.reset = rr.data(), f.y = o.y.data();
    kernels::causal_conv1d_fwd_cpu(f);
    kernels::CausalConv1dBwdParams g;
    g.B = B, g.L = L, g.D = D, g.K = K, g.dtype = dt, g.w_dtype = dt, g.silu = true, g.reverse = reverse;
    g.x = xx.data(), g.weight = w.data(), g.bias = bias.data(), g.reset = rr.data(), g.dy = gy.data();
    g.dx = o.dx.data(), g.dweight = o.dw.data(), g.dbias = o.db.data();
    kernels::causal_conv1d_bwd_cpu(g);
    return o;
  };
  const Out rev = call(true, x, reset, dy);
  const Out ref = call(false, flip(x), reset_rev, flip(dy));
  EXPECT_EQ(rev.y, flip(ref.y));
  EXPECT_EQ(rev.dx, flip(ref.dx));
  EXPECT_EQ(rev.dw, ref.dw);
  EXPECT_EQ(rev.db, ref.db);
  EXPECT_NE(rev.y, call(false, x, reset, dy).y) << "the direction matters";
  // No states: the reverse conv runs over a whole sequence.
  kernels::CausalConv1dFwdParams f;
  f.B = B, f.L = L, f.D = D, f.K = K, f.dtype = dt, f.w_dtype = dt, f.reverse = true;
  std::vector<T> y(B * L * D), state(B * (K - 1) * D);
  f.x = x.data(), f.weight = w.data(), f.y = y.data(), f.final_state = state.data();
  EXPECT_THROW(kernels::causal_conv1d_fwd_cpu(f), Error);
}

TEST(CausalConv1d, ReverseEqualsTheFlippedCausalConv) {
  check_reverse_conv<double>(DType::F64);
  check_reverse_conv<float>(DType::F32);
}
