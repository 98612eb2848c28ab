// The CUDA GEMM kernel (cuBLASLt / cuBLAS) against the CPU one: padded leading dimensions, batches, alpha / beta,
// bias, every transpose and dtype. matmul / linear on CUDA against the CPU: the op table.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/ops/gemm.h"
#include "kernels/gemm.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

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

TEST(CudaGemm, GemmKernelAllFlagsAndDtypes) {
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

TEST(CudaGemm, ErrorsOnMixedDevices) {
  MT_REQUIRE_CUDA();
  EXPECT_THROW(matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 4}, DType::F32, Device::cuda())), Error);
}
