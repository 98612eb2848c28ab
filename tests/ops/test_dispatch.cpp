// The device dispatch of the ops (autograd/ops/dispatch.h): the CPU kernels' dtype convention (bf16 / f16 through
// f32 copies, results converted back), pass-through on CUDA, and the "built without CUDA" error where a build has no
// CUDA kernels.
#include <gtest/gtest.h>

#include "autograd/ops/dispatch.h"
#include "kernels/gemm.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

int g_calls = 0;
int twice(int v) {
  ++g_calls;
  return 2 * v;
}

}  // namespace

TEST(Dispatch, CpuConvertsHalfInputsToF32AndResultsBack) {
  const Tensor x = Tensor::from_vector({1.5, -2.25, 3.0}, {3}, DType::BF16);
  const ops::Dispatch d("op", x);
  EXPECT_TRUE(d.cpu());
  EXPECT_EQ(d.kernel_dtype(DType::BF16), DType::F32);
  EXPECT_EQ(d.kernel_dtype(DType::F16), DType::F32);
  const Tensor xc = d.input(x);
  EXPECT_EQ(xc.dtype(), DType::F32);
  EXPECT_EQ(xc.to_vector(), x.to_vector());
  EXPECT_FALSE(d.input(Tensor()).defined());
  const Tensor y = d.output({2}, DType::BF16);
  EXPECT_EQ(y.dtype(), DType::F32);
  y.copy_(Tensor::from_vector({0.1, 7.0}, {2}, DType::F32));
  const Tensor r = d.result(y, DType::BF16);
  EXPECT_EQ(r.dtype(), DType::BF16);
  EXPECT_EQ(r.to_vector(), y.to(DType::BF16).to_vector());  // one rounding, as Tensor::to
  // A kernel writing into an existing bf16 tensor goes through an f32 buffer and write_back.
  const Tensor dst = Tensor::zeros({2}, DType::BF16);
  const Tensor buf = d.output_into(dst);
  EXPECT_EQ(buf.dtype(), DType::F32);
  buf.copy_(Tensor::from_vector({1.0, 2.0}, {2}, DType::F32));
  d.write_back(buf, dst);
  EXPECT_EQ(dst.to_vector(), (std::vector<double>{1.0, 2.0}));
}

TEST(Dispatch, CpuLeavesF32AndF64Alone) {
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor x = Tensor::ones({4}, dt);
    const ops::Dispatch d("op", x);
    EXPECT_EQ(d.kernel_dtype(dt), dt);
    EXPECT_TRUE(d.input(x).same(x));  // no copy
    const Tensor out = Tensor::zeros({4}, dt);
    EXPECT_TRUE(d.output_into(out).same(out));
    const Tensor y = d.output({4}, dt);
    EXPECT_TRUE(d.result(y, dt).same(y));
  }
  // An f64 op converts its f32 weights to f64 (the compute dtype comes from the leading input).
  const ops::Dispatch d("op", Tensor::ones({1}, DType::F64));
  EXPECT_EQ(d.input(Tensor::ones({2}, DType::F32)).dtype(), DType::F64);
}

TEST(Dispatch, CudaPassesEveryDtypeThrough) {
  const ops::Dispatch d("op", Device::cuda(), DType::F32);
  EXPECT_FALSE(d.cpu());
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) EXPECT_EQ(d.kernel_dtype(dt), dt);
  const Tensor host = Tensor::ones({2}, DType::BF16);
  EXPECT_TRUE(d.input(host).same(host));
  EXPECT_TRUE(d.result(host, DType::BF16).same(host));
  EXPECT_TRUE(d.output_into(host).same(host));
}

TEST(Dispatch, RunPicksTheKernelByDevice) {
  g_calls = 0;
  EXPECT_EQ(ops::Dispatch("op", Device::cpu(), DType::F32).run(&twice, static_cast<int (*)(int)>(nullptr), 4), 8);
  EXPECT_EQ(g_calls, 1);
  EXPECT_EQ(ops::Dispatch("op", Device::cuda(), DType::F32).run(static_cast<int (*)(int)>(nullptr), &twice, 5), 10);
  EXPECT_EQ(g_calls, 2);
}

// In a build without CUDA, MT_CUDA_KERNEL gives a null pointer and calling it names the op; with CUDA, the kernel.
TEST(Dispatch, WithoutCudaKernelsTheErrorNamesTheOp) {
  g_calls = 0;
  EXPECT_EQ(MT_CUDA_KERNEL(gemm_cuda) == nullptr, !built_with_cuda());
  try {
    ops::Dispatch("matmul", Device::cuda(), DType::F32).run(&twice, static_cast<int (*)(int)>(nullptr), 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Device);
    EXPECT_EQ(std::string(e.what()), "matmul: tensor is on CUDA but this mamba-train was built without CUDA support");
  }
  EXPECT_EQ(g_calls, 0) << "no kernel ran";
}
