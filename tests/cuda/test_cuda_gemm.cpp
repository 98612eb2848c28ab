// CUDA GEMM (cuBLASLt / cuBLAS) and matmul / linear forward + backward against the CPU reference.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/ops/gemm.h"
#include "autograd/ops/shape_ops.h"
#include "kernels/gemm.h"
#include "op_compare.h"

using namespace mt;

namespace {

Tensor randn32(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, 1.0, DType::F32);
}

// gemm_cuda with padded leading dims, a batch, alpha / beta / bias, vs the same problem through gemm_cpu in f64
// on the dtype-rounded values.
void check_gemm_kernel(DType dt, int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t batch, double alpha,
                       double beta, bool with_bias) {
  const int64_t ar = ta ? K : M, acols = ta ? M : K, br = tb ? N : K, bcols = tb ? K : N;
  const int64_t lda = acols + 8, ldb = bcols + 8, ldc = N + 8;  // keeps 16-byte alignment for 16-bit types
  const int64_t sa = ar * lda, sb = br * ldb, sc = M * ldc;
  Generator g(7 + M + 3 * N + 11 * K);
  Tensor A = Tensor::rand({batch * sa}, g, -1, 1, DType::F32).to(dt);
  Tensor B = Tensor::rand({batch * sb}, g, -1, 1, DType::F32).to(dt);
  Tensor C = Tensor::rand({batch * sc}, g, -1, 1, DType::F32).to(dt);
  Tensor bias = Tensor::rand({N}, g, -1, 1, DType::F32).to(dt);

  auto params = [&](const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& bi) {
    kernels::GemmParams p;
    p.dtype = a.dtype();
    p.trans_a = ta;
    p.trans_b = tb;
    p.M = M;
    p.N = N;
    p.K = K;
    p.batch = batch;
    p.A = a.data_ptr();
    p.lda = lda;
    p.stride_a = sa;
    p.B = b.data_ptr();
    p.ldb = ldb;
    p.stride_b = sb;
    p.C = c.data_ptr();
    p.ldc = ldc;
    p.stride_c = sc;
    p.alpha = alpha;
    p.beta = beta;
    p.bias = with_bias ? bi.data_ptr() : nullptr;
    return p;
  };
  Tensor Cg = C.to(Device::cuda());
  Tensor Ag = A.to(Device::cuda()), Bg = B.to(Device::cuda()), biasg = bias.to(Device::cuda());
  if (beta == 0.0) Cg.fill_(NAN);  // must not be read
  kernels::gemm_cuda(params(Ag, Bg, Cg, biasg));

  Tensor A64 = A.to(DType::F64), B64 = B.to(DType::F64), C64 = C.to(DType::F64), bias64 = bias.to(DType::F64);
  kernels::gemm_cpu(params(A64, B64, C64, bias64));

  std::vector<double> got = Cg.to_vector(), ref = C64.to_vector();
  // Compare only the written [M, N] corners (padding is untouched by both).
  std::vector<double> a, b;
  for (int64_t bb = 0; bb < batch; ++bb)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        a.push_back(got[bb * sc + m * ldc + n]);
        b.push_back(ref[bb * sc + m * ldc + n]);
      }
  const std::string what = std::string(dtype_name(dt)) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                           " K=" + std::to_string(K) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                           " batch=" + std::to_string(batch) + " bias=" + std::to_string(with_bias);
  if (is_half(dt)) {
    EXPECT_LE(test::rel_l2(a, b), 1e-2) << what;
  } else {
    const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
    EXPECT_LE(test::tolerance_ratio(a, b, tol, tol), 1.0) << what;
  }
}

}  // namespace

TEST(CudaLinalg, GemmKernelAllFlagsAndDtypes) {
  MT_REQUIRE_CUDA();
  const std::vector<std::vector<int64_t>> sizes = {{1, 1, 1}, {7, 13, 5}, {129, 65, 257}, {257, 8, 24}};
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16})
    for (const auto& s : sizes)
      for (int t = 0; t < 4; ++t) {
        check_gemm_kernel(dt, s[0], s[1], s[2], t & 1, t & 2, 1, 1.0, 0.0, false);
        check_gemm_kernel(dt, s[0], s[1], s[2], t & 1, t & 2, 3, 0.5, 1.0, true);
      }
  check_gemm_kernel(DType::F32, 5, 3, 0, false, false, 2, 1.0, 2.0, true);  // K = 0: C = beta C + bias
}

TEST(CudaLinalg, MatmulForwardBackwardMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto mm = [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); };
  auto mm_t = [](const std::vector<Tensor>& v) { return matmul(transpose(v[0], -1, -2), v[1]); };
  struct Case {
    std::vector<Tensor> in;
    const char* name;
    bool transposed;
  };
  std::vector<Case> cases = {
      {{randn32({37, 129}, 1), randn32({129, 65}, 2)}, "2-D", false},
      {{randn32({1, 1}, 3), randn32({1, 1}, 4)}, "1x1x1", false},
      {{randn32({3, 7, 13}, 5), randn32({3, 13, 5}, 6)}, "batched", false},
      {{randn32({2, 3, 37, 16}, 7), randn32({16, 257}, 8)}, "batched @ 2-D", false},
      {{randn32({4, 13, 7}, 9), randn32({4, 13, 5}, 10)}, "transposed a", true},
  };
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Case& c : cases)
      test::expect_cuda_matches_cpu(c.transposed ? mm_t : mm, c.in, dt, 2e-4, 1e-4, 3e-2, c.name);
  }
  test::expect_cuda_matches_cpu(mm, cases[0].in, DType::F64, 1e-10, 1e-10, 0, "2-D f64");
}

TEST(CudaLinalg, LinearForwardBackwardMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto lin_b = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); };
  auto lin = [](const std::vector<Tensor>& v) { return linear(v[0], v[1]); };
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    test::expect_cuda_matches_cpu(lin_b, {randn32({2, 37, 257}, 1), randn32({129, 257}, 2), randn32({129}, 3)}, dt,
                                  2e-4, 1e-4, 3e-2, "linear 3-D x with bias");
    test::expect_cuda_matches_cpu(lin, {randn32({13, 64}, 4), randn32({7, 64}, 5)}, dt, 2e-4, 1e-4, 3e-2,
                                  "linear no bias");
    test::expect_cuda_matches_cpu(lin_b, {randn32({1, 1}, 6), randn32({1, 1}, 7), randn32({1}, 8)}, dt, 2e-4, 1e-4,
                                  3e-2, "linear 1x1");
  }
  // Odd in_features in bf16 (unaligned rows: cuBLASLt has to pick an algorithm for 2-byte alignment).
  test::expect_cuda_matches_cpu(lin_b, {randn32({5, 7, 13}, 9), randn32({11, 13}, 10), randn32({11}, 11)}, DType::BF16,
                                0, 0, 3e-2, "linear odd sizes bf16");
  test::expect_cuda_matches_cpu(lin_b, {randn32({5, 7, 13}, 9), randn32({11, 13}, 10), randn32({11}, 11)}, DType::F64,
                                1e-10, 1e-10, 0, "linear f64");
}

TEST(CudaLinalg, ErrorsOnMixedDevices) {
  MT_REQUIRE_CUDA();
  EXPECT_THROW(matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 4}, DType::F32, Device::cuda())), Error);
}
