// Elementwise ops, dropout and cast on the CPU: values against hand-computed results, gradchecks of the cases the
// op table does not cover (one-sided, the same tensor twice), numerics at the extremes, and the error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::randn64;

namespace {

Tensor rand64(const Shape& s, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return Tensor::rand(s, g, lo, hi, DType::F64);
}

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);

}  // namespace

// ---------------------------------------------------------------- broadcasting

TEST(Elementwise, BroadcastShapes) {
  EXPECT_EQ(broadcast_shapes({3, 1, 5}, {4, 5}), (Shape{3, 4, 5}));
  EXPECT_EQ(broadcast_shapes({}, {2, 3}), (Shape{2, 3}));
  EXPECT_EQ(broadcast_shapes({1}, {}), (Shape{1}));
  EXPECT_EQ(broadcast_shapes({2, 1}, {1, 0}), (Shape{2, 0}));
  EXPECT_EQ(broadcast_shapes({7}, {7}), (Shape{7}));
}

TEST(Elementwise, IncompatibleBroadcastNamesBothShapes) {
  try {
    broadcast_shapes({3, 4}, {5});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[5]"), std::string::npos) << e.what();
  }
  Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({4, 3});
  try {
    mul(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mul"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 3]"), std::string::npos) << m;
  }
}

TEST(Elementwise, MixedDtypesAndIntegersAreRejected) {
  Tensor a = Tensor::ones({2}), b = Tensor::ones({2}, DType::F64);
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(exp(Tensor::ones({2}, DType::I64)), Error);
  EXPECT_THROW(sum(Tensor::ones({2}, DType::I32)), Error);
  EXPECT_THROW(add(Tensor(), a), Error);
}

// ---------------------------------------------------------------- binary ops

TEST(Elementwise, BinaryValues) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector({10, 20, 30}, {3});
  Tensor c = Tensor::from_vector({2, 4}, {2, 1});
  EXPECT_EQ(add(a, b).to_vector(), (std::vector<double>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ(sub(a, b).to_vector(), (std::vector<double>{-9, -18, -27, -6, -15, -24}));
  EXPECT_EQ(mul(a, c).to_vector(), (std::vector<double>{2, 4, 6, 16, 20, 24}));
  EXPECT_EQ(div(a, c).to_vector(), (std::vector<double>{0.5, 1, 1.5, 1, 1.25, 1.5}));
  EXPECT_EQ((c + b).shape(), (Shape{2, 3}));
  EXPECT_EQ((c + b).to_vector(), (std::vector<double>{12, 22, 32, 14, 24, 34}));
  Tensor s = Tensor::scalar(2.0);
  EXPECT_EQ((a * s).to_vector(), (std::vector<double>{2, 4, 6, 8, 10, 12}));
  EXPECT_EQ((s - a).to_vector(), (std::vector<double>{1, 0, -1, -2, -3, -4}));
  EXPECT_EQ((a + 0.5).to_vector(), (std::vector<double>{1.5, 2.5, 3.5, 4.5, 5.5, 6.5}));
  EXPECT_EQ((3.0 * a).to_vector(), (std::vector<double>{3, 6, 9, 12, 15, 18}));
  EXPECT_EQ((-a).to_vector(), (std::vector<double>{-1, -2, -3, -4, -5, -6}));
  // Outputs are always fresh tensors, even when nothing is computed.
  Tensor z = Tensor::ones({0, 3});
  EXPECT_EQ(add(z, b).shape(), (Shape{0, 3}));
}

TEST(Elementwise, BinaryOnNonContiguousViews) {
  Tensor a = randn64({4, 6}, 3);
  Tensor at = a.as_strided({6, 4}, {1, 6}, 0);  // transpose view
  Tensor b = randn64({6, 4}, 4);
  Tensor col = randn64({6, 8}, 5).as_strided({6, 1}, {8, 1}, 2);  // strided column
  EXPECT_EQ(add(at, b).to_vector(), add(at.contiguous(), b).to_vector());
  EXPECT_EQ(mul(b, at).to_vector(), mul(b, at.contiguous()).to_vector());
  EXPECT_EQ(div(at, col).to_vector(), div(at.contiguous(), col.contiguous()).to_vector());
  EXPECT_EQ(exp(at).to_vector(), exp(at.contiguous()).to_vector());
}

TEST(Elementwise, GradcheckBinaryOneSided) {
  // Only one input requires grad: the other is not saved / not differentiated.
  for (BinaryFn f : {static_cast<BinaryFn>(mul), static_cast<BinaryFn>(div), static_cast<BinaryFn>(sub)}) {
    Tensor a = randn64({3, 1, 5}, 11), b = rand64({4, 5}, 12, 0.5, 1.5);
    set_requires_grad(a);
    EXPECT_GRADCHECK(gradcheck([f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {a, b}));
    Tensor a2 = randn64({3, 1, 5}, 13), b2 = rand64({4, 5}, 14, 0.5, 1.5);
    set_requires_grad(b2);
    EXPECT_GRADCHECK(gradcheck([f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {a2, b2}));
  }
}

TEST(Elementwise, GradcheckSameTensorTwice) {
  // x * x and x + x: two gradient contributions to one leaf accumulate through the tape.
  Tensor x = randn64({5}, 21);
  EXPECT_GRADCHECK(gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {x}));
  EXPECT_GRADCHECK(
      gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[0]) / in[0]; }, {rand64({5}, 22, 0.5, 2.0)}));
}

// ---------------------------------------------------------------- unary ops

TEST(Elementwise, UnaryValues) {
  Tensor x = Tensor::from_vector({-2, -0.5, 0, 0.5, 2}, {5}, DType::F64);
  std::vector<double> v = x.to_vector();
  auto expect = [&](const Tensor& y, const std::function<double(double)>& f) {
    std::vector<double> ref;
    for (double e : v) ref.push_back(f(e));
    EXPECT_CLOSE(y, Tensor::from_vector(ref, {5}, DType::F64), 1e-15, 1e-14);
  };
  expect(exp(x), [](double e) { return std::exp(e); });
  expect(sigmoid(x), [](double e) { return 1 / (1 + std::exp(-e)); });
  expect(silu(x), [](double e) { return e / (1 + std::exp(-e)); });
  expect(softplus(x), [](double e) { return std::log1p(std::exp(e)); });
  expect(tanh(x), [](double e) { return std::tanh(e); });
  expect(square(x), [](double e) { return e * e; });
  Tensor p = Tensor::from_vector({0.25, 1, 4, 9}, {4});
  EXPECT_EQ(sqrt(p).to_vector(), (std::vector<double>{0.5, 1, 2, 3}));
  EXPECT_CLOSE(log(p), Tensor::from_vector({std::log(0.25), 0, std::log(4.0), std::log(9.0)}, {4}), 1e-7, 1e-6);
}

TEST(Elementwise, SoftplusLargeInputsDoNotOverflow) {
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    Tensor x = Tensor::from_vector({-1000, -100, -30, 19.5, 20, 20.5, 50, 100, 1000}, {9}, dt);
    set_requires_grad(x);
    Tensor y = softplus(x);
    std::vector<double> yv = y.to_vector();
    for (double e : yv) EXPECT_TRUE(std::isfinite(e)) << dtype_name(dt);
    EXPECT_EQ(yv[0], 0.0);  // e^-1000 underflows to an exact 0
    EXPECT_GE(yv[1], 0.0);
    EXPECT_GT(yv[2], 0.0) << dtype_name(dt);  // e^-30 is representable in every dtype
    EXPECT_NEAR(yv[2], std::exp(-30.0), 1e-2 * std::exp(-30.0));
    EXPECT_NEAR(yv[3], 19.5 + std::log1p(std::exp(-19.5)), 19.5 * 1e-2);
    EXPECT_EQ(yv[5], Tensor::from_vector({20.5}, {1}, dt).item());  // identity above the threshold
    EXPECT_EQ(yv[7], Tensor::from_vector({100}, {1}, dt).item());
    EXPECT_EQ(yv[8], Tensor::from_vector({1000}, {1}, dt).item());
    backward(y, Tensor::ones({9}, dt));
    std::vector<double> gv = grad(x).to_vector();
    for (double e : gv) EXPECT_TRUE(std::isfinite(e));
    EXPECT_EQ(gv[0], 0.0);
    EXPECT_EQ(gv[7], 1.0);
    EXPECT_EQ(gv[8], 1.0);
    EXPECT_NEAR(gv[3], 1 / (1 + std::exp(-19.5)), 1e-6);
  }
}

TEST(Elementwise, SigmoidSaturatesWithoutNaN) {
  Tensor x = Tensor::from_vector({-1000, -90, 90, 1000}, {4});
  set_requires_grad(x);
  Tensor y = sigmoid(x);
  EXPECT_EQ(y.to_vector(), (std::vector<double>{0, std::exp(-90.0f) / (1 + std::exp(-90.0f)), 1, 1}));
  Tensor s = silu(x);
  EXPECT_EQ(s.to_vector()[0], 0.0);
  EXPECT_EQ(s.to_vector()[3], 1000.0);
  backward(sum(add(y, s)));
  for (double e : grad(x).to_vector()) EXPECT_TRUE(std::isfinite(e));
}

TEST(Elementwise, LogNearZero) {
  Tensor f = Tensor::from_vector({1e-30, 1e-38, 0}, {3});
  std::vector<double> v = log(f).to_vector();
  EXPECT_NEAR(v[0], std::log(1e-30), 1e-4);
  EXPECT_NEAR(v[1], std::log(1e-38), 1e-4);
  EXPECT_TRUE(std::isinf(v[2]) && v[2] < 0);
  Tensor d = Tensor::from_vector({1e-300, 4.9e-324}, {2}, DType::F64);
  std::vector<double> w = log(d).to_vector();
  EXPECT_NEAR(w[0], std::log(1e-300), 1e-12);
  EXPECT_NEAR(w[1], std::log(4.9e-324), 1e-9);
  // d log / dx = 1 / x stays finite for tiny positive x.
  Tensor t = Tensor::from_vector({1e-20, 1e-10}, {2}, DType::F64);
  set_requires_grad(t);
  backward(sum(log(t)));
  EXPECT_CLOSE(grad(t), Tensor::from_vector({1e20, 1e10}, {2}, DType::F64), 0.0, 1e-14);
}

TEST(Elementwise, HalfPrecisionOnCpu) {
  // bf16 / f16 run through f32 and round once: identical to rounding the f32 result.
  Tensor a = randn64({7, 5}, 50).to(DType::F32), b = randn64({5}, 51).to(DType::F32);
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor ah = a.to(dt), bh = b.to(dt);
    EXPECT_EQ(mul(ah, bh).dtype(), dt);
    EXPECT_EQ(mul(ah, bh).to_vector(), mul(ah.to(DType::F32), bh.to(DType::F32)).to(dt).to_vector());
    EXPECT_EQ(silu(ah).to_vector(), silu(ah.to(DType::F32)).to(dt).to_vector());
    EXPECT_EQ(sum(ah, {0}).to_vector(), sum(ah.to(DType::F32), {0}).to(dt).to_vector());
    Tensor leaf = ah.clone();
    set_requires_grad(leaf);
    backward(sum(mul(leaf, bh)));
    EXPECT_EQ(grad(leaf).dtype(), dt);
    EXPECT_EQ(grad(leaf).to_vector(), mul(Tensor::ones({7, 5}), bh.to(DType::F32)).to_vector());
  }
}

// ---------------------------------------------------------------- cast

TEST(Elementwise, CastRoundTrips) {
  Tensor x = Tensor::from_vector({1.0, -2.5, 0.15625, 3.0, 1e-3}, {5});
  EXPECT_EQ(cast(cast(x, DType::F64), DType::F32).to_vector(), x.to_vector());
  Tensor exact = Tensor::from_vector({1.0, -2.5, 0.15625, 3.0, 256.0}, {5});  // representable in bf16 and f16
  EXPECT_EQ(cast(cast(exact, DType::BF16), DType::F32).to_vector(), exact.to_vector());
  EXPECT_EQ(cast(cast(exact, DType::F16), DType::F32).to_vector(), exact.to_vector());
  Tensor r = cast(x, DType::BF16);
  EXPECT_EQ(r.dtype(), DType::BF16);
  EXPECT_EQ(cast(r, DType::F32).to_vector(), x.to(DType::BF16).to(DType::F32).to_vector());
  Tensor same = cast(x, DType::F32);
  EXPECT_FALSE(same.same(x));
  EXPECT_EQ(same.to_vector(), x.to_vector());
  EXPECT_EQ(cast(Tensor::from_vector({1.7, -2.2}, {2}), DType::I64).to_vector_i64(), (std::vector<int64_t>{1, -2}));
}

TEST(Elementwise, CastGradientReturnsToInputDtype) {
  Tensor x = Tensor::from_vector({1, 2, 3}, {3});
  set_requires_grad(x);
  Tensor w = Tensor::from_vector({0.5, -1, 2}, {3}, DType::F64);
  backward(sum(mul(cast(x, DType::F64), w)));
  ASSERT_TRUE(grad(x).defined());
  EXPECT_EQ(grad(x).dtype(), DType::F32);
  EXPECT_EQ(grad(x).to_vector(), w.to_vector());
  Tensor y = rand64({4}, 60, -1, 1);
  EXPECT_GRADCHECK(gradcheck([](const std::vector<Tensor>& in) { return square(cast(in[0], DType::F64)); }, {y}));
}

// ---------------------------------------------------------------- dropout

TEST(Elementwise, DropoutStatistics) {
  const int64_t n = 200000;
  const double p = 0.3;
  Tensor x = Tensor::full({n}, 2.0);
  Generator gen(7);
  std::vector<double> y = dropout(x, p, true, gen).to_vector();
  int64_t kept = 0;
  for (double v : y) {
    if (v != 0.0) {
      ++kept;
      EXPECT_FLOAT_EQ(v, 2.0 / (1.0 - p));
    }
  }
  const double frac = static_cast<double>(kept) / n;
  EXPECT_NEAR(frac, 1.0 - p, 0.01);  // binomial std ~ 0.001
  EXPECT_NE(gen.offset(), 0u);       // counters were reserved
}

TEST(Elementwise, DropoutIsDeterministicBySeed) {
  Tensor x = randn64({13, 17}, 70).to(DType::F32);
  Generator g1(123), g2(123), g3(124);
  Tensor a = dropout(x, 0.5, true, g1), b = dropout(x, 0.5, true, g2), c = dropout(x, 0.5, true, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  // The generator advanced: the next draw uses a different mask.
  EXPECT_NE(dropout(x, 0.5, true, g1).to_vector(), a.to_vector());
  // f64 and bf16 tensors drop the same elements (the mask depends on the index only).
  Generator g4(123);
  std::vector<double> d = dropout(x.to(DType::F64), 0.5, true, g4).to_vector();
  std::vector<double> av = a.to_vector();
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(d[i] == 0.0, av[i] == 0.0) << i;
}

TEST(Elementwise, DropoutBackwardReusesMask) {
  Tensor x = rand64({257}, 80, 0.5, 1.5);
  set_requires_grad(x);
  Generator gen(5);
  Tensor y = dropout(x, 0.4, true, gen);
  Tensor w = rand64({257}, 81, 0.5, 1.5);
  backward(y, w);
  std::vector<double> yv = y.to_vector(), gv = grad(x).to_vector(), wv = w.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_DOUBLE_EQ(gv[i], yv[i] == 0.0 ? 0.0 : wv[i] / 0.6) << i;
  // gradcheck with a fresh generator state per call (the mask must be the same in every evaluation)
  Tensor x2 = randn64({3, 7}, 82);
  auto res = gradcheck(
      [](const std::vector<Tensor>& in) {
        Generator g(99);
        return dropout(in[0], 0.25, true, g);
      },
      {x2});
  EXPECT_GRADCHECK(res);
}

TEST(Elementwise, DropoutEvalAndEdgeProbabilities) {
  Tensor x = randn64({6}, 90);
  set_requires_grad(x);
  Generator gen(1);
  Tensor e = dropout(x, 0.5, false, gen);
  EXPECT_FALSE(e.same(x));
  EXPECT_EQ(e.to_vector(), x.to_vector());
  EXPECT_EQ(gen.offset(), 0u);  // nothing drawn in eval mode
  EXPECT_EQ(dropout(x, 0.0, true, gen).to_vector(), x.to_vector());
  std::vector<double> all = dropout(x, 1.0, true, gen).to_vector();
  for (double v : all) EXPECT_EQ(v, 0.0);
  backward(sum(e));
  EXPECT_EQ(grad(x).to_vector(), std::vector<double>(6, 1.0));
  try {
    dropout(x, 1.5, true, gen);
    FAIL() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("dropout"), std::string::npos) << err.what();
  }
}

TEST(Elementwise, GradientAccumulationUsesAdd) {
  // A leaf used by three ops: the tape sums the contributions with add (identical shapes).
  Tensor x = rand64({4, 3}, 120, 0.5, 1.5);
  set_requires_grad(x);
  Tensor loss = sum(add(add(mul(x, x), exp(x)), mean(x, {0}, true)));
  backward(loss);
  std::vector<double> xv = x.to_vector(), gv = grad(x).to_vector();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(gv[i], 2 * xv[i] + std::exp(xv[i]) + 1.0, 1e-12);
}
