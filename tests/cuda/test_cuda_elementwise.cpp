// CUDA elementwise ops, dropout, cast and reductions against the CPU reference: same inputs on both devices,
// forward outputs and input gradients (backward against the same upstream gradient) compared per element.
// f32: rtol 1e-5 elementwise / 1e-4 reductions; bf16: 3e-2. Sizes 1, 7, 257, 1000003 and broadcast shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "test_util.h"

using namespace mt;

namespace {

Device gpu() { return Device::cuda(0); }

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// |a - b| <= atol_rel * max|b| + rtol * |b| everywhere (atol scaled to the data so near-zero values of a
// cancelling sum are judged against the magnitude of the tensor). NaN / inf mismatches fail.
::testing::AssertionResult close(const Tensor& actual, const Tensor& expected, double rtol, double atol_rel) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " vs "
                                         << shape_str(expected.shape());
  const std::vector<double> a = actual.to_vector(), b = expected.to_vector();
  double scale = 0.0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    if (!(err <= atol_rel * scale + rtol * std::fabs(b[i])) && !(a[i] == b[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << a[i] << " vs " << b[i] << " (max |ref| " << scale << ")";
  }
  return ::testing::AssertionSuccess();
}

struct Tol {
  double rtol, atol_rel;
};
Tol tol(DType dt, bool reduction = false) {
  if (is_half(dt)) return {3e-2, 2e-2};
  return reduction ? Tol{1e-4, 1e-5} : Tol{1e-5, 1e-6};
}

// Run f on CPU copies and CUDA copies of `inputs` (converted to dt; all require grad), compare the outputs, run
// backward on both with the same upstream gradient and compare every input's gradient.
void compare(const std::string& what, const Fn& f, const std::vector<Tensor>& inputs, DType dt, Tol t) {
  SCOPED_TRACE(what + " " + dtype_name(dt));
  std::vector<Tensor> xc, xg;
  for (const Tensor& x : inputs) {
    Tensor c = x.to(dt).clone();
    Tensor g = c.to(gpu());
    set_requires_grad(c);
    set_requires_grad(g);
    xc.push_back(c);
    xg.push_back(g);
  }
  // One graph at a time: backward consumes the whole (thread-local) tape.
  Tensor yc = f(xc);
  Generator gen(17);
  Tensor w = Tensor::rand(yc.shape(), gen, 0.5, 1.5, yc.dtype());
  backward(yc, w);
  Tensor yg = f(xg);
  ASSERT_TRUE(yg.is_cuda());
  ASSERT_EQ(yg.dtype(), yc.dtype());
  EXPECT_TRUE(close(yg, yc, t.rtol, t.atol_rel)) << "forward";
  backward(yg, w.to(gpu()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(grad(xg[i]).defined()) << "input " << i;
    EXPECT_TRUE(grad(xg[i]).is_cuda());
    EXPECT_TRUE(close(grad(xg[i]), grad(xc[i]), t.rtol, t.atol_rel)) << "gradient of input " << i;
  }
}

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, 1.0, DType::F32);
}
Tensor rand(const Shape& s, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return Tensor::rand(s, g, lo, hi, DType::F32);
}

const int64_t kSizes[] = {1, 7, 257, 1000003};
const DType kDtypes[] = {DType::F32, DType::BF16};

}  // namespace

TEST(CudaElementwise, BinarySameShape) {
  MT_REQUIRE_CUDA();
  using B = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, B> ops[] = {{"add", add}, {"sub", sub}, {"mul", mul}, {"div", div}};
  for (DType dt : kDtypes)
    for (int64_t n : kSizes)
      for (const auto& op : ops) {
        B f = op.second;
        compare(
            std::string(op.first) + " n=" + std::to_string(n),
            [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {randn({n}, 1), rand({n}, 2, 0.5, 2.0)}, dt,
            tol(dt));
      }
}

TEST(CudaElementwise, BinaryBroadcasting) {
  MT_REQUIRE_CUDA();
  using B = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, B> ops[] = {{"add", add}, {"sub", sub}, {"mul", mul}, {"div", div}};
  const std::pair<Shape, Shape> shapes[] = {
      {{3, 1, 5}, {4, 5}},    {{257, 7}, {7}},     {{}, {1000003}}, {{1000003}, {}},
      {{2, 1, 3}, {2, 4, 3}}, {{13, 1}, {1, 257}}, {{1}, {7, 1}},
  };
  for (DType dt : kDtypes)
    for (const auto& s : shapes)
      for (const auto& op : ops) {
        B f = op.second;
        // Reductions back to the broadcast input shapes sum many terms: reduction tolerance.
        compare(
            std::string(op.first) + " " + shape_str(s.first) + " op " + shape_str(s.second),
            [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); },
            {randn(s.first, 3), rand(s.second, 4, 0.5, 2.0)}, dt, tol(dt, true));
      }
}

TEST(CudaElementwise, BinaryNonContiguous) {
  MT_REQUIRE_CUDA();
  Tensor a = randn({40, 70}, 5), b = randn({70, 40}, 6);
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    Tensor ac = a.to(dt), bc = b.to(dt);
    Tensor at = ac.as_strided({70, 40}, {1, 70}, 0);  // transpose view
    Tensor ag = ac.to(gpu()), bg = bc.to(gpu());
    Tensor atg = ag.as_strided({70, 40}, {1, 70}, 0);
    EXPECT_TRUE(close(mul(atg, bg), mul(at, bc), tol(dt).rtol, tol(dt).atol_rel)) << dtype_name(dt);
    EXPECT_TRUE(close(add(bg, atg), add(bc, at), tol(dt).rtol, tol(dt).atol_rel)) << dtype_name(dt);
    EXPECT_TRUE(close(exp(atg), exp(at), tol(dt).rtol, tol(dt).atol_rel)) << dtype_name(dt);
  }
}

TEST(CudaElementwise, Unary) {
  MT_REQUIRE_CUDA();
  using U = Tensor (*)(const Tensor&);
  struct Case {
    const char* name;
    U f;
    double lo, hi;
  };
  const Case cases[] = {
      {"exp", exp, -4, 4},     {"log", log, 0.05, 8},           {"sigmoid", sigmoid, -8, 8},
      {"silu", silu, -8, 8},   {"softplus", softplus, -30, 30}, {"tanh", tanh, -4, 4},
      {"sqrt", sqrt, 0.05, 8}, {"square", square, -4, 4},       {"neg", neg, -4, 4},
  };
  for (DType dt : kDtypes)
    for (int64_t n : kSizes)
      for (const Case& c : cases) {
        U f = c.f;
        compare(
            std::string(c.name) + " n=" + std::to_string(n), [f](const std::vector<Tensor>& in) { return f(in[0]); },
            {rand({n}, 10 + n, c.lo, c.hi)}, dt, tol(dt));
      }
  for (DType dt : kDtypes) {
    compare(
        "add_scalar", [](const std::vector<Tensor>& in) { return add_scalar(in[0], 1.5); }, {randn({257}, 20)}, dt,
        tol(dt));
    compare(
        "mul_scalar", [](const std::vector<Tensor>& in) { return mul_scalar(in[0], -0.75); }, {randn({257}, 21)}, dt,
        tol(dt));
  }
}

TEST(CudaElementwise, OtherDtypes) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F64, DType::F16}) {
    const Tol t = dt == DType::F64 ? Tol{1e-12, 1e-13} : tol(dt);
    compare(
        "mul f64/f16", [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); },
        {randn({3, 1, 5}, 30), randn({4, 5}, 31)}, dt, t);
    compare(
        "silu f64/f16", [](const std::vector<Tensor>& in) { return silu(in[0]); }, {randn({1000}, 32)}, dt, t);
    compare(
        "mean f64/f16", [](const std::vector<Tensor>& in) { return mean(in[0], {1}); },
        {rand({3, 257, 5}, 33, 0.5, 1.5)}, dt, t);
  }
}

TEST(CudaElementwise, ReductionsOverEveryDim) {
  MT_REQUIRE_CUDA();
  Tensor x = rand({3, 257, 5}, 40, 0.5, 1.5);
  Tensor xn = randn({3, 257, 5}, 41);
  const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {1}, {2}, {-1}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (DType dt : kDtypes)
    for (const auto& dims : dim_sets)
      for (bool keepdim : {false, true}) {
        const std::string d = shape_str(dims) + (keepdim ? " keepdim" : "");
        compare(
            "sum " + d, [&](const std::vector<Tensor>& in) { return sum(in[0], dims, keepdim); }, {x}, dt,
            tol(dt, true));
        compare(
            "mean " + d, [&](const std::vector<Tensor>& in) { return mean(in[0], dims, keepdim); }, {xn}, dt,
            tol(dt, true));
      }
}

TEST(CudaElementwise, LongReductions) {
  MT_REQUIRE_CUDA();
  // Full reduction of a long vector (split rows), few long rows, long columns with few outputs (split columns),
  // many short rows (warp per row), and a middle-dim reduction.
  const std::pair<Shape, std::vector<int64_t>> cases[] = {
      {{1000003}, {}},   {{3, 100003}, {1}},   {{100003, 3}, {0}},
      {{70001, 7}, {1}}, {{5, 40009, 3}, {1}}, {{2, 3, 65537}, {0, 2}},
  };
  for (DType dt : kDtypes)
    for (const auto& c : cases) {
      const auto dims = c.second;
      compare(
          "sum " + shape_str(c.first) + " over " + shape_str(dims),
          [dims](const std::vector<Tensor>& in) { return sum(in[0], dims); }, {rand(c.first, 50, 0.5, 1.5)}, dt,
          tol(dt, true));
      compare(
          "mean " + shape_str(c.first) + " over " + shape_str(dims),
          [dims](const std::vector<Tensor>& in) { return mean(in[0], dims); }, {rand(c.first, 51, 0.5, 1.5)}, dt,
          tol(dt, true));
    }
}

TEST(CudaElementwise, SumToShape) {
  MT_REQUIRE_CUDA();
  Tensor g = rand({4, 3, 257}, 60, 0.5, 1.5);
  for (const Shape& s : {Shape{257}, Shape{3, 1}, Shape{4, 1, 1}, Shape{}, Shape{1, 3, 257}}) {
    EXPECT_TRUE(close(sum_to_shape(g.to(gpu()), s), sum_to_shape(g, s), 1e-4, 1e-5)) << shape_str(s);
  }
}

TEST(CudaElementwise, DropoutMaskMatchesCpu) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F64})
    for (int64_t n : kSizes) {
      Tensor x = rand({n}, 70, 0.5, 1.5).to(dt);
      Tensor xc = x.clone(), xg = x.to(gpu());
      set_requires_grad(xc);
      set_requires_grad(xg);
      Generator gc(99), gg(99);
      Tensor w = rand({n}, 71, 0.5, 1.5).to(dt);
      Tensor yc = dropout(xc, 0.3, true, gc);
      backward(yc, w);
      Tensor yg = dropout(xg, 0.3, true, gg);
      backward(yg, w.to(gpu()));
      EXPECT_EQ(gc.offset(), gg.offset());
      // Same mask, same float arithmetic: bit-identical.
      EXPECT_EQ(yg.to_vector(), yc.to_vector()) << dtype_name(dt) << " n=" << n;
      EXPECT_EQ(grad(xg).to_vector(), grad(xc).to_vector()) << dtype_name(dt) << " n=" << n;
    }
}

TEST(CudaElementwise, Cast) {
  MT_REQUIRE_CUDA();
  for (DType to : {DType::BF16, DType::F16, DType::F64})
    compare(
        std::string("cast to ") + dtype_name(to), [to](const std::vector<Tensor>& in) { return cast(in[0], to); },
        {randn({1000003}, 80)}, DType::F32, tol(DType::F32));
  Tensor x = randn({257}, 81);
  EXPECT_EQ(cast(cast(x.to(gpu()), DType::BF16), DType::F32).to_vector(),
            cast(cast(x, DType::BF16), DType::F32).to_vector());
}

TEST(CudaElementwise, ErrorsNameTheOp) {
  MT_REQUIRE_CUDA();
  Tensor a = Tensor::ones({3}, DType::F32, gpu()), b = Tensor::ones({3});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}
