// CUDA embedding / log_softmax / cross_entropy / linear_cross_entropy forward + backward against the CPU reference.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/shape_ops.h"
#include "op_compare.h"

using namespace mt;

namespace {

Tensor randn32(const Shape& s, uint64_t seed, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F32);
}

// Targets in [0, C) with every 5th row ignored (kIgnoreIndex).
Tensor targets_with_ignored(int64_t N, int64_t C, uint64_t seed, DType dt = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> t = Tensor::randint({N}, g, 0, C).to_vector_i64();
  for (int64_t i = 0; i < N; i += 5) t[i] = kIgnoreIndex;
  return Tensor::from_vector_i64(t, {N}, dt);
}

}  // namespace

TEST(CudaNn, EmbeddingMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto f = [](const std::vector<Tensor>& v) { return embedding(v[0], v[1]); };
  Generator g(3);
  Tensor ids = Tensor::randint({7, 37}, g, 0, 50);  // many repeats across 259 ids
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    test::expect_cuda_matches_cpu(f, {randn32({50, 13}, 1), ids}, dt, 1e-5, 1e-5, 1e-2, "embedding i64");
    test::expect_cuda_matches_cpu(f, {randn32({50, 13}, 2), ids.to(DType::I32)}, dt, 1e-5, 1e-5, 1e-2, "embedding i32");
  }
  test::expect_cuda_matches_cpu(f, {randn32({1, 1}, 4), Tensor::from_vector_i64({0}, {1})}, DType::F32, 1e-6, 1e-6, 0,
                                "embedding V=1 d=1");
}

TEST(CudaNn, EmbeddingBadIdOnCuda) {
  MT_REQUIRE_CUDA();
  Tensor w = Tensor::zeros({10, 4}, DType::BF16, Device::cuda());
  Tensor ids = Tensor::from_vector_i64({1, 2, 3, 4, 5, 10}, {2, 3}, DType::I64, Device::cuda());
  try {
    embedding(w, ids);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("id 10"), std::string::npos) << m;
    EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
    EXPECT_NE(m.find("[0, 10)"), std::string::npos) << m;
  }
}

TEST(CudaNn, LogSoftmaxMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto f = [](int64_t d) { return [d](const std::vector<Tensor>& v) { return log_softmax(v[0], d); }; };
  for (DType dt : {DType::F32, DType::BF16}) {
    test::expect_cuda_matches_cpu(f(-1), {randn32({13, 257}, 1, 3.0)}, dt, 1e-4, 1e-4, 3e-2, "dim -1");
    test::expect_cuda_matches_cpu(f(0), {randn32({7, 5}, 2)}, dt, 1e-4, 1e-4, 3e-2, "dim 0");
    test::expect_cuda_matches_cpu(f(1), {randn32({2, 9, 3}, 3)}, dt, 1e-4, 1e-4, 3e-2, "middle dim");
    test::expect_cuda_matches_cpu(f(-1), {randn32({3, 50280}, 4, 2.0)}, dt, 1e-4, 1e-4, 3e-2, "C = 50280");
    test::expect_cuda_matches_cpu(f(-1), {randn32({5, 1}, 5)}, dt, 1e-6, 1e-6, 3e-2, "C = 1");
    test::expect_cuda_matches_cpu(f(-1), {randn32({4, 64}, 6)}, dt, 1e-4, 1e-4, 3e-2, "C = 64 (16-byte loads)");
  }
}

TEST(CudaNn, CrossEntropyMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto f = [](const std::vector<Tensor>& v) { return cross_entropy(v[0], v[1]); };
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const double tol = dt == DType::F64 ? 1e-10 : 1e-4;
    test::expect_cuda_matches_cpu(f, {randn32({37, 50280}, 1, 2.0), targets_with_ignored(37, 50280, 2)}, dt, tol, tol,
                                  3e-2, "N=37 C=50280");
    test::expect_cuda_matches_cpu(f, {randn32({13, 7}, 3), targets_with_ignored(13, 7, 4, DType::I32)}, dt, tol, tol,
                                  3e-2, "N=13 C=7 i32");
    test::expect_cuda_matches_cpu(f, {randn32({4, 1}, 5), Tensor::from_vector_i64({0, 0, kIgnoreIndex, 0}, {4})}, dt,
                                  tol, tol, 3e-2, "C=1");
  }
  // Every row ignored: loss 0, gradient 0.
  Tensor x = randn32({3, 11}, 6).to(Device::cuda()).clone();
  set_requires_grad(x);
  Tensor l = cross_entropy(
      x, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}, DType::I64, Device::cuda()));
  EXPECT_EQ(l.item(), 0.0);
  backward(l);
  EXPECT_EQ(grad(x).to_vector(), std::vector<double>(33, 0.0));
}

TEST(CudaNn, CrossEntropyBadTargetOnCuda) {
  MT_REQUIRE_CUDA();
  Tensor x = Tensor::zeros({4, 50280}, DType::BF16, Device::cuda());
  try {
    cross_entropy(x, Tensor::from_vector_i64({0, 50280, 3, -7}, {4}, DType::I32, Device::cuda()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("target 50280"), std::string::npos) << m;
    EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  }
}

TEST(CudaNn, LinearCrossEntropyMatchesCpu) {
  MT_REQUIRE_CUDA();
  auto f = [](int64_t chunk) {
    return
        [chunk](const std::vector<Tensor>& v) { return linear_cross_entropy(v[0], v[1], v[2], kIgnoreIndex, chunk); };
  };
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const double tol = dt == DType::F64 ? 1e-10 : 1e-4;
    // The GPT-NeoX vocabulary (16-byte row loads), several chunks with a ragged last one.
    for (int64_t chunk : {int64_t{0}, int64_t{8}}) {
      test::expect_cuda_matches_cpu(
          f(chunk), {randn32({37, 64}, 1), randn32({50280, 64}, 2, 0.2), targets_with_ignored(37, 50280, 3)}, dt, tol,
          tol, 3e-2, "N=37 H=64 V=50280 chunk=" + std::to_string(chunk));
    }
    // Odd sizes (scalar row access), i32 targets, one row per chunk.
    test::expect_cuda_matches_cpu(f(1),
                                  {randn32({13, 5}, 4), randn32({7, 5}, 5), targets_with_ignored(13, 7, 6, DType::I32)},
                                  dt, tol, tol, 3e-2, "N=13 H=5 V=7 chunk=1");
    test::expect_cuda_matches_cpu(
        f(0), {randn32({4, 3}, 7), randn32({1, 3}, 8), Tensor::from_vector_i64({0, 0, kIgnoreIndex, 0}, {4})}, dt, tol,
        tol, 3e-2, "V=1");
  }
  // bf16 through the fused op tracks the unfused linear + cross_entropy in bf16 (both round logits to bf16).
  Tensor h = randn32({29, 48}, 9).to(DType::BF16).to(Device::cuda()),
         w = randn32({1000, 48}, 10, 0.3).to(DType::BF16).to(Device::cuda());
  Tensor t = targets_with_ignored(29, 1000, 11).to(Device::cuda());
  const double fused = linear_cross_entropy(h, w, t, kIgnoreIndex, 7).item(),
               plain = cross_entropy(linear(h, w), t).item();
  EXPECT_NEAR(fused, plain, 1e-2 * std::fabs(plain));
  // Every row ignored: loss 0, zero gradients.
  Tensor hz = randn32({3, 8}, 12).to(Device::cuda()).clone(), wz = randn32({11, 8}, 13).to(Device::cuda()).clone();
  set_requires_grad(hz);
  set_requires_grad(wz);
  Tensor l = linear_cross_entropy(
      hz, wz, Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}, DType::I64, Device::cuda()));
  EXPECT_EQ(l.item(), 0.0);
  backward(l);
  EXPECT_EQ(grad(hz).to_vector(), std::vector<double>(24, 0.0));
  EXPECT_EQ(grad(wz).to_vector(), std::vector<double>(88, 0.0));
}

TEST(CudaNn, LinearCrossEntropyIsReproducibleAndNamesBadTargets) {
  MT_REQUIRE_CUDA();
  Tensor h = randn32({300, 64}, 1).to(DType::BF16).to(Device::cuda()),
         w = randn32({5003, 64}, 2, 0.2).to(DType::BF16).to(Device::cuda());
  Tensor t = targets_with_ignored(300, 5003, 3).to(Device::cuda());
  auto run = [&] {
    Tensor hh = h.clone(), ww = w.clone();
    set_requires_grad(hh);
    set_requires_grad(ww);
    Tensor l = linear_cross_entropy(hh, ww, t, kIgnoreIndex, 64);
    backward(l);
    return std::make_tuple(l.item(), grad(hh).to_vector(), grad(ww).to_vector());
  };
  auto a = run(), b = run();
  EXPECT_EQ(std::get<0>(a), std::get<0>(b));
  EXPECT_EQ(std::get<1>(a), std::get<1>(b));
  EXPECT_EQ(std::get<2>(a), std::get<2>(b));
  try {
    linear_cross_entropy(h, w, Tensor::from_vector_i64({0, 5003, 3}, {3}, DType::I32, Device::cuda()), kIgnoreIndex, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    // h has 300 rows and targets 3: a shape error first.
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
  }
  try {
    std::vector<int64_t> tv = t.to_vector_i64();
    tv[17] = 5003;
    linear_cross_entropy(h, w, Tensor::from_vector_i64(tv, {300}, DType::I64, Device::cuda()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("target 5003"), std::string::npos) << m;
    EXPECT_NE(m.find("row 17"), std::string::npos) << m;
  }
}
