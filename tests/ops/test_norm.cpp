// CPU tests of the norms (rms / layer, plain and with the fused residual add): values against naive loops written
// here, gradcheck through a chain of blocks, gradient dtypes, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/ops/norm.h"
#include "tests/pack_outputs.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::pack_outputs;

namespace {

void expect_vec_near(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << what << " element " << i;
}

// Naive norm of each row of v ([rows, H]): rms or layer, optional bias.
std::vector<double> naive_norm(const std::vector<double>& v, int64_t H, const std::vector<double>& w,
                               const std::vector<double>* b, bool rms, double eps) {
  std::vector<double> y(v.size());
  for (size_t r0 = 0; r0 < v.size(); r0 += H) {
    double mu = 0, ss = 0;
    if (!rms) {
      for (int64_t c = 0; c < H; ++c) mu += v[r0 + c];
      mu /= H;
    }
    for (int64_t c = 0; c < H; ++c) ss += (v[r0 + c] - mu) * (v[r0 + c] - mu);
    const double rstd = 1.0 / std::sqrt(ss / H + eps);
    for (int64_t c = 0; c < H; ++c) y[r0 + c] = (v[r0 + c] - mu) * rstd * w[c] + (b ? (*b)[c] : 0.0);
  }
  return y;
}

}  // namespace

TEST(Norm, RmsNormMatchesReferenceFormula) {
  // docs/DESIGN.md "The Mamba-1 block": h = RMSNorm(residual), x * rsqrt(mean(x^2) + eps) * w, eps 1e-5.
  Generator gen(8);
  for (int64_t H : {1, 7, 768}) {
    Tensor x = Tensor::randn({3, 4, H}, gen, 0, 1, DType::F32);
    Tensor w = Tensor::rand({H}, gen, 0.5, 1.5, DType::F32);
    const auto xv = x.to_vector(), wv = w.to_vector();
    std::vector<double> ref(xv.size());
    for (size_t r0 = 0; r0 < xv.size(); r0 += H) {
      double ms = 0;
      for (int64_t c = 0; c < H; ++c) ms += xv[r0 + c] * xv[r0 + c];
      ms /= H;
      for (int64_t c = 0; c < H; ++c) ref[r0 + c] = xv[r0 + c] / std::sqrt(ms + 1e-5) * wv[c];
    }
    Tensor y = rms_norm(x, w, 1e-5);
    EXPECT_EQ(y.dtype(), DType::F32);
    EXPECT_EQ(y.shape(), x.shape());
    expect_vec_near(y.to_vector(), ref, 1e-5, str("rms_norm H=", H));

    // Fused: residual_out = x + residual in f32, y = RMSNorm(residual_out), here cast to bf16.
    Tensor res = Tensor::randn({3, 4, H}, gen, 0, 1, DType::F32);
    auto o = rms_norm_residual(x.to(DType::BF16), res, w, 1e-5, DType::BF16);
    EXPECT_EQ(o.y.dtype(), DType::BF16);
    EXPECT_EQ(o.residual.dtype(), DType::F32);
    const auto xb = x.to(DType::BF16).to_vector(), rv = res.to_vector();
    std::vector<double> sum(xb.size());
    for (size_t i = 0; i < xb.size(); ++i)
      sum[i] = static_cast<double>(static_cast<float>(xb[i]) + static_cast<float>(rv[i]));
    expect_vec_near(o.residual.to_vector(), sum, 0.0, "residual_out");
    EXPECT_CLOSE(o.y, Tensor::from_vector(naive_norm(sum, H, wv, nullptr, true, 1e-5), x.shape(), DType::F64), 1e-2,
                 1e-2);
  }
}

TEST(Norm, LayerNormMatchesNaive) {
  Generator gen(9);
  for (int64_t H : {1, 7, 768}) {
    Tensor x = Tensor::randn({5, H}, gen, 1, 2, DType::F32);
    Tensor w = Tensor::rand({H}, gen, 0.5, 1.5, DType::F32);
    Tensor b = Tensor::randn({H}, gen, 0, 1, DType::F32);
    const auto wv = w.to_vector(), bv = b.to_vector();
    EXPECT_CLOSE(layer_norm(x, w, b, 1e-5),
                 Tensor::from_vector(naive_norm(x.to_vector(), H, wv, &bv, false, 1e-5), x.shape(), DType::F64), 1e-5,
                 1e-5);
    EXPECT_CLOSE(layer_norm(x, w, Tensor(), 1e-5),
                 Tensor::from_vector(naive_norm(x.to_vector(), H, wv, nullptr, false, 1e-5), x.shape(), DType::F64),
                 1e-5, 1e-5);
    Tensor res = Tensor::randn({5, H}, gen, 0, 1, DType::F32);
    auto o = layer_norm_residual(x, res, w, b, 1e-6, DType::F32);
    std::vector<double> sum = o.residual.to_vector();
    const auto xv = x.to_vector(), rv = res.to_vector();
    for (size_t i = 0; i < sum.size(); ++i)
      ASSERT_EQ(sum[i], static_cast<double>(static_cast<float>(xv[i]) + static_cast<float>(rv[i])));
    EXPECT_CLOSE(o.y, Tensor::from_vector(naive_norm(sum, H, wv, &bv, false, 1e-6), x.shape(), DType::F64), 1e-5, 1e-5);
  }
}

TEST(Norm, ResidualChainGradcheck) {
  // Two pre-norm blocks: the first block's residual_out is the second's residual input, and its y is used too,
  // so the gradient of the residual stream is the sum of the two paths.
  Generator gen(17);
  std::vector<Tensor> in = {Tensor::randn({2, 5}, gen, 0, 1, DType::F64), Tensor::randn({2, 5}, gen, 0, 1, DType::F64),
                            Tensor::rand({5}, gen, 0.5, 1.5, DType::F64), Tensor::rand({5}, gen, 0.5, 1.5, DType::F64)};
  auto f = [](const std::vector<Tensor>& t) {
    NormOut a = rms_norm_residual(t[0], Tensor(), t[2], 1e-5, DType::F64);
    NormOut b = rms_norm_residual(t[1], a.residual, t[3], 1e-5, DType::F64);
    return pack_outputs(pack_outputs(a.y, b.y, DType::F64), b.residual, DType::F64);
  };
  EXPECT_GRADCHECK(gradcheck(f, in));
}

TEST(Norm, GradDtypes) {
  Generator gen(4);
  Tensor x = Tensor::randn({3, 8}, gen, 0, 1, DType::BF16);
  Tensor res = Tensor::randn({3, 8}, gen, 0, 1, DType::F32);
  Tensor w = Tensor::rand({8}, gen, 0.5, 1.5, DType::F32);
  Tensor b = Tensor::randn({8}, gen, 0, 1, DType::F32);
  set_requires_grad(x), set_requires_grad(res), set_requires_grad(w), set_requires_grad(b);
  auto o = layer_norm_residual(x, res, w, b, 1e-5, DType::BF16);
  backward(pack_outputs(o.y, o.residual, DType::F32), Tensor::ones({48}, DType::F32));
  EXPECT_EQ(grad(x).dtype(), DType::BF16);
  EXPECT_EQ(grad(res).dtype(), DType::F32);
  EXPECT_EQ(grad(w).dtype(), DType::F32);
  EXPECT_EQ(grad(b).dtype(), DType::F32);
  // Unit gradients on y and on residual_out, weight 1: through the norm d(sum_c y_c)/dr = rstd (1 - 1 - n mean(n))
  // = 0 (mean(n) = 0 for LayerNorm), so d residual is exactly the 1 that residual_out passes straight back.
  Tensor x2 = Tensor::randn({2, 6}, gen, 0, 1, DType::F32), r2 = Tensor::randn({2, 6}, gen, 0, 1, DType::F32);
  Tensor w2 = Tensor::ones({6}, DType::F32);
  set_requires_grad(r2);
  auto o2 = layer_norm_residual(x2, r2, w2, Tensor(), 1e-5, DType::F32);
  backward(pack_outputs(o2.y, o2.residual, DType::F32), Tensor::ones({24}, DType::F32));
  std::vector<double> g = grad(r2).to_vector();
  for (double v : g) EXPECT_NEAR(v, 1.0, 1e-5);
}

TEST(Norm, Errors) {
  Tensor x = Tensor::ones({2, 4});
  Tensor w = Tensor::ones({4});
  EXPECT_NE(test::shape_error_of([&] { rms_norm(x, Tensor::ones({3}), 1e-5); }).find("rms_norm: weight must be [4]"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] { rms_norm(x, w.to(DType::BF16), 1e-5); }).find("f32 or f64"), std::string::npos);
  EXPECT_NE(test::shape_error_of([&] { layer_norm(x, w, Tensor::ones({5}), 1e-5); }).find("bias must be [4]"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              rms_norm_residual(x, Tensor::ones({2, 4}, DType::F64), w, 1e-5, DType::F32);
            }).find("residual must be f32"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              rms_norm_residual(x, Tensor::ones({2, 5}), w, 1e-5, DType::F32);
            }).find("x's shape"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] { rms_norm_residual(x, Tensor(), w, 1e-5, DType::I32); }).find("out_dtype"),
            std::string::npos);
  EXPECT_NE(test::shape_error_of([&] { layer_norm(x, w, Tensor(), -1.0); }).find("eps"), std::string::npos);
  EXPECT_NE(test::shape_error_of([&] {
              rms_norm(Tensor::ones({2, 4}, DType::I64), w, 1e-5);
            }).find("float"),
            std::string::npos);
}
