// matmul / linear (autograd/ops/gemm.h) and the CPU GEMM kernel (kernels/gemm.h).
#include <gtest/gtest.h>

#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/shape_ops.h"
#include "kernels/gemm.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::randn64;

namespace {

// Reference: C = alpha * op(A) op(B) + beta * C0 + bias with plain loops in double.
struct GemmCase {
  int64_t M, N, K;
  bool ta, tb;
};

template <typename T>
void check_gemm_vs_naive(const GemmCase& c, int64_t batch, double alpha, double beta, bool with_bias, double tol) {
  const int64_t ar = c.ta ? c.K : c.M, acols = c.ta ? c.M : c.K;  // stored shapes (row-major)
  const int64_t br = c.tb ? c.N : c.K, bcols = c.tb ? c.K : c.N;
  const int64_t lda = acols + 3, ldb = bcols + 1, ldc = c.N + 2;  // padded leading dims
  const int64_t sa = ar * lda + 5, sb = br * ldb, sc = c.M * ldc + 1;
  Generator g(99 + c.M * 7 + c.N * 13 + c.K);
  std::vector<double> A = Tensor::rand({batch * sa}, g, -1, 1, DType::F64).to_vector();
  std::vector<double> B = Tensor::rand({batch * sb}, g, -1, 1, DType::F64).to_vector();
  std::vector<double> C0 = Tensor::rand({batch * sc}, g, -1, 1, DType::F64).to_vector();
  std::vector<double> bias = Tensor::rand({c.N}, g, -1, 1, DType::F64).to_vector();
  std::vector<T> At(A.begin(), A.end()), Bt(B.begin(), B.end()), Ct(C0.begin(), C0.end()),
      biast(bias.begin(), bias.end());
  if (beta == 0.0)
    for (auto& v : Ct) v = static_cast<T>(NAN);  // beta == 0: C must not be read

  kernels::GemmParams p;
  p.dtype = dtype_of<T>::value;
  p.trans_a = c.ta;
  p.trans_b = c.tb;
  p.M = c.M;
  p.N = c.N;
  p.K = c.K;
  p.batch = batch;
  p.A = At.data();
  p.lda = lda;
  p.stride_a = sa;
  p.B = Bt.data();
  p.ldb = ldb;
  p.stride_b = sb;
  p.C = Ct.data();
  p.ldc = ldc;
  p.stride_c = sc;
  p.alpha = alpha;
  p.beta = beta;
  p.bias = with_bias ? biast.data() : nullptr;
  kernels::gemm_cpu(p);

  double worst = 0.0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < c.N; ++n) {
        double s = 0.0;
        for (int64_t k = 0; k < c.K; ++k) {
          const double a = c.ta ? A[b * sa + k * lda + m] : A[b * sa + m * lda + k];
          const double bb = c.tb ? B[b * sb + n * ldb + k] : B[b * sb + k * ldb + n];
          s += a * bb;
        }
        double ref = alpha * s + (beta == 0.0 ? 0.0 : beta * C0[b * sc + m * ldc + n]) + (with_bias ? bias[n] : 0.0);
        double got = static_cast<double>(Ct[b * sc + m * ldc + n]);
        double err = std::fabs(got - ref) / (1.0 + std::fabs(ref));
        if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
      }
  EXPECT_LE(worst, tol) << "M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb
                        << " batch=" << batch << " alpha=" << alpha << " beta=" << beta << " bias=" << with_bias;
}

}  // namespace

TEST(Gemm, GemmCpuMatchesNaiveLoopAllFlags) {
  const std::vector<std::vector<int64_t>> sizes = {{1, 1, 1}, {7, 13, 5}, {129, 65, 257}, {3, 300, 2}};
  for (const auto& s : sizes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        GemmCase c{s[0], s[1], s[2], ta == 1, tb == 1};
        check_gemm_vs_naive<double>(c, 1, 1.0, 0.0, false, 1e-12);
        check_gemm_vs_naive<float>(c, 1, 1.0, 0.0, false, 2e-5);
        check_gemm_vs_naive<double>(c, 2, 0.5, 1.5, true, 1e-12);
        check_gemm_vs_naive<float>(c, 3, -2.0, 1.0, true, 2e-5);
      }
}

TEST(Gemm, GemmCpuKZeroAndLargeK) {
  check_gemm_vs_naive<double>({5, 3, 0, false, false}, 1, 1.0, 0.0, true, 0.0);
  check_gemm_vs_naive<double>({5, 3, 0, true, true}, 2, 1.0, 2.0, false, 1e-15);
  check_gemm_vs_naive<double>({2, 2100, 600, false, true}, 1, 1.0, 0.0, false, 1e-12);  // > one N and K panel
}

TEST(Gemm, MatmulValues) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector({5, 6, 7, 8}, {2, 2});
  EXPECT_EQ(matmul(a, b).to_vector(), (std::vector<double>{19, 22, 43, 50}));
  // Transposed view of a goes through the trans flag: a^T b = [[26, 30], [38, 44]].
  EXPECT_EQ(matmul(transpose(a, 0, 1), b).to_vector(), (std::vector<double>{26, 30, 38, 44}));
  Tensor ab = matmul(Tensor::from_vector({1, 2, 3, 4, 1, 0, 0, 1}, {2, 2, 2}), b);
  EXPECT_EQ(ab.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(ab.to_vector(), (std::vector<double>{19, 22, 43, 50, 5, 6, 7, 8}));
  // K = 0: an all-zero product.
  Tensor z = matmul(Tensor::empty({2, 0}), Tensor::empty({0, 3}));
  EXPECT_EQ(z.to_vector(), std::vector<double>(6, 0.0));
}

TEST(Gemm, MatmulBatchedMatchesPerBatchProduct) {
  Tensor a = randn64({3, 4, 5}, 1), b = randn64({3, 5, 6}, 2);
  Tensor c = matmul(a, b);
  for (int64_t i = 0; i < 3; ++i) {
    Tensor ai = a.as_strided({4, 5}, {5, 1}, i * 20), bi = b.as_strided({5, 6}, {6, 1}, i * 30);
    Tensor ci = c.as_strided({4, 6}, {6, 1}, i * 24);
    EXPECT_CLOSE(ci, matmul(ai, bi), 1e-12, 1e-12);
  }
}

TEST(Gemm, LinearValues) {
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = Tensor::from_vector({1, 0, 0, 0, 1, 1}, {2, 3});
  Tensor b = Tensor::from_vector({10, 20}, {2});
  EXPECT_EQ(linear(x, w, b).to_vector(), (std::vector<double>{11, 25, 14, 31}));
  EXPECT_EQ(linear(x, w).to_vector(), (std::vector<double>{1, 5, 4, 11}));
}

TEST(Gemm, LinearOnlyWeightRequiresGrad) {
  Tensor x = randn64({6, 3}, 1), w = randn64({2, 3}, 2), b = randn64({2}, 3);
  set_requires_grad(w);
  Tensor y = linear(x, w, b);
  backward(y, Tensor::ones({6, 2}, DType::F64));
  // dW[o, i] = sum_r x[r, i]
  std::vector<double> xs = x.to_vector(), dw = grad(w).to_vector();
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < 3; ++i) {
      double s = 0;
      for (int64_t r = 0; r < 6; ++r) s += xs[r * 3 + i];
      EXPECT_NEAR(dw[o * 3 + i], s, 1e-12);
    }
  EXPECT_FALSE(grad(b).defined());
}

TEST(Gemm, HalfPrecisionOnCpuGoesThroughF32) {
  Generator g(5);
  Tensor a = Tensor::randn({7, 13}, g), b = Tensor::randn({13, 5}, g);
  Tensor ref = matmul(a, b);
  Tensor hb = matmul(a.to(DType::BF16), b.to(DType::BF16));
  EXPECT_EQ(hb.dtype(), DType::BF16);
  EXPECT_LT(test::rel_l2(hb.to_vector(), ref.to_vector()), 3e-2);
  Tensor hf = linear(a.to(DType::F16), b.to(DType::F16).as_strided({5, 13}, {1, 5}, 0));
  EXPECT_LT(test::rel_l2(hf.to_vector(), ref.to_vector()), 3e-3);
}

TEST(Gemm, Errors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  try {
    matmul(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
    std::string m = e.what();
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 5]"), std::string::npos) << m;
    EXPECT_NE(m.find("matmul"), std::string::npos) << m;
  }
  EXPECT_THROW(matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 4})), Error);  // batch mismatch
  EXPECT_THROW(matmul(Tensor::zeros({3}), Tensor::zeros({3, 4})), Error);           // 1-D a
  EXPECT_THROW(matmul(a, Tensor::zeros({3, 4}, DType::F64)), Error);                // dtype mismatch
  EXPECT_THROW(matmul(Tensor::zeros({2, 3}, DType::I64), Tensor::zeros({3, 4}, DType::I64)), Error);
  try {
    linear(Tensor::zeros({4, 3}), Tensor::zeros({5, 2}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[4, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[5, 2]"), std::string::npos) << m;
  }
  EXPECT_THROW(linear(Tensor::zeros({4, 3}), Tensor::zeros({5, 3}), Tensor::zeros({4})), Error);  // bias size
}

// linear_split gives linear's output cut into packed parts: on the CPU the same values and weight / bias gradients
// as slicing linear's output, bit for bit (each is the same dot product), and dx to rounding (its sum over the
// outputs runs part by part). An unused part gets zero weight and bias rows.
TEST(Gemm, LinearSplitEqualsSlicesOfLinear) {
  Generator g(21);
  const Tensor x = Tensor::randn({2, 5, 7}, g), w = Tensor::randn({9, 7}, g), b = Tensor::randn({9}, g);
  const Tensor gy0 = Tensor::randn({2, 5, 4}, g), gy1 = Tensor::randn({2, 5, 5}, g);
  auto run = [&](bool split, bool use_second) {
    Tensor xs = x.clone(), ws = w.clone(), bs = b.clone();
    set_requires_grad(xs);
    set_requires_grad(ws);
    set_requires_grad(bs);
    std::vector<Tensor> parts;
    if (split) {
      parts = linear_split(xs, ws, bs, {4, 5});
    } else {
      const Tensor y = linear(xs, ws, bs);
      parts = {contiguous(slice(y, -1, 0, 4)), contiguous(slice(y, -1, 4, 9))};
    }
    Tensor loss = sum(mul(parts[0], gy0));
    if (use_second) loss = add(loss, sum(mul(parts[1], gy1)));
    backward(loss);
    return std::vector<Tensor>{parts[0], parts[1], grad(xs), grad(ws), grad(bs)};
  };
  for (bool use_second : {true, false}) {
    const std::vector<Tensor> a = run(true, use_second), r = run(false, use_second);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].shape(), r[i].shape()) << i;
      if (i == 2)  // dx
        EXPECT_LT(test::rel_l2(a[i].to_vector(), r[i].to_vector()), 1e-6) << "second part used " << use_second;
      else
        EXPECT_EQ(a[i].to_vector(), r[i].to_vector()) << "output " << i << ", second part used " << use_second;
    }
    if (!use_second) {
      const std::vector<double> dw = a[3].to_vector(), db = a[4].to_vector();
      for (size_t i = 4 * 7; i < dw.size(); ++i) EXPECT_EQ(dw[i], 0.0);
      for (size_t i = 4; i < db.size(); ++i) EXPECT_EQ(db[i], 0.0);
    }
  }
  EXPECT_THROW(linear_split(x, w, b, {4, 4}), Error);  // parts short of the 9 rows
  EXPECT_THROW(linear_split(x, w, b, {0, 9}), Error);  // an empty part
  EXPECT_THROW(linear_split(x, w, b, {}), Error);      // no parts
}
