// CUDA core: copies, random numbers identical to the CPU's, the caching allocator in steady state.
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "core/allocator.h"
#include "core/cuda_context.h"
#include "test_util.h"

using namespace mt;

TEST(CudaCore, ContextAndCopies) {
  MT_REQUIRE_CUDA();
  EXPECT_GT(CudaContext::get().sm_count(), 0);
  EXPECT_FALSE(CudaContext::get().describe().empty());
  Generator g(3);
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    Tensor h = Tensor::randn({7, 13}, g, 0, 1, dt);
    Tensor d = h.to(Device::cuda());
    EXPECT_TRUE(d.is_cuda());
    EXPECT_EQ(d.to(Device::cpu()).to_vector(), h.to_vector()) << dtype_name(dt);
    // Strided copy and dtype conversion on the device equal the CPU's.
    Tensor ht = h.as_strided({13, 7}, {1, 13}, 0).contiguous().to(DType::F32);
    Tensor dt_ = d.as_strided({13, 7}, {1, 13}, 0).contiguous().to(DType::F32);
    EXPECT_EQ(dt_.to_vector(), ht.to_vector()) << dtype_name(dt);
  }
  Tensor f = Tensor::full({257}, 2.5, DType::BF16, Device::cuda());
  for (double v : f.to_vector()) EXPECT_EQ(v, 2.5);
}

TEST(CudaCore, RandomNumbersMatchTheCpu) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::F64}) {
    Generator gc(42), gg(42);
    Tensor uc = Tensor::rand({100003}, gc, -2, 3, dt), ug = Tensor::rand({100003}, gg, -2, 3, dt, Device::cuda());
    EXPECT_EQ(ug.to_vector(), uc.to_vector());  // bit-identical
    Tensor nc = Tensor::randn({4097}, gc, 0, 1, dt), ng = Tensor::randn({4097}, gg, 0, 1, dt, Device::cuda());
    EXPECT_CLOSE(ng, nc, 1e-6, 1e-5);  // log / cos may differ in the last bits
    Tensor ic = Tensor::randint({999}, gc, 5, 50000), ig = Tensor::randint({999}, gg, 5, 50000, DType::I64, Device::cuda());
    EXPECT_EQ(ig.to_vector_i64(), ic.to_vector_i64());
    EXPECT_EQ(gc.offset(), gg.offset());
  }
}

TEST(CudaCore, CachingAllocatorReachesSteadyState) {
  MT_REQUIRE_CUDA();
  Generator g(1);
  Tensor w = Tensor::randn({512, 512}, g, 0, 1, DType::F32, Device::cuda());
  set_requires_grad(w);
  auto step = [&] {
    Tensor y = sum(mul(exp(mul_scalar(w, 0.01)), w));
    backward(y);
    zero_grad(w);
  };
  step();
  step();
  const CudaMemoryStats before = cuda_memory_stats();
  for (int i = 0; i < 20; ++i) step();
  const CudaMemoryStats after = cuda_memory_stats();
  EXPECT_EQ(after.num_device_mallocs, before.num_device_mallocs) << "cudaMalloc in steady state";
  EXPECT_EQ(after.num_device_frees, before.num_device_frees);
  EXPECT_GE(after.peak_allocated_bytes, 3 * 512 * 512 * 4);
  EXPECT_GE(after.cached_bytes, after.allocated_bytes);
  cuda_empty_cache();
  EXPECT_EQ(cuda_memory_stats().cached_bytes, cuda_memory_stats().allocated_bytes);
}
