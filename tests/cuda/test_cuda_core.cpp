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
    Tensor ic = Tensor::randint({999}, gc, 5, 50000),
           ig = Tensor::randint({999}, gg, 5, 50000, DType::I64, Device::cuda());
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

// Every copy path of the CUDA strided copy (memcpy, vectorised row copies at 16/8/4/2-byte alignment, the 32-bit
// generic kernel) against the CPU on views that hit each: last-dim slices at aligned and odd offsets, transposes,
// broadcasts, 4-d permutations, strided destinations (a slice's gradient scattered back), with and without dtype
// conversion. Copies are exact, so the results must be equal to the bit, including the elements a strided
// destination leaves alone.
TEST(CudaCore, StridedCopiesOfEveryLayoutMatchTheCpu) {
  MT_REQUIRE_CUDA();
  struct View {
    const char* what;
    Shape base, shape, strides;
    int64_t offset;
  };
  const std::vector<View> views = {
      {"last-dim slice, aligned", {4, 37, 96}, {4, 37, 48}, {37 * 96, 96, 1}, 48},
      {"last-dim slice, offset 8", {4, 37, 96}, {4, 37, 40}, {37 * 96, 96, 1}, 8},
      {"last-dim slice, odd offset and width", {4, 37, 96}, {4, 37, 47}, {37 * 96, 96, 1}, 1},
      {"16 of 48 columns (x_proj B)", {3, 129, 48}, {3, 129, 16}, {129 * 48, 48, 1}, 16},
      {"transpose", {96, 37}, {37, 96}, {1, 37}, 0},
      {"broadcast rows", {1, 50}, {7, 50}, {0, 1}, 0},
      {"4-d permutation", {2, 3, 5, 7}, {7, 5, 3, 2}, {1, 7, 35, 105}, 0},
      {"every other row", {64, 24}, {32, 24}, {48, 1}, 0},
      {"one element", {5}, {1}, {1}, 3},
  };
  const std::vector<std::pair<DType, DType>> kinds = {
      {DType::BF16, DType::BF16}, {DType::F32, DType::F32},  {DType::F64, DType::F64},  {DType::I64, DType::I64},
      {DType::F16, DType::F16},   {DType::F32, DType::BF16}, {DType::BF16, DType::F32}, {DType::F16, DType::F32},
      {DType::F64, DType::BF16},  {DType::I64, DType::F32}};
  Generator g(11);
  for (const View& v : views) {
    for (const auto& k : kinds) {
      const DType src_dt = k.first, dst_dt = k.second;
      const std::string tag = std::string(v.what) + " " + dtype_name(src_dt) + " -> " + dtype_name(dst_dt);
      Tensor base =
          src_dt == DType::I64 ? Tensor::randint(v.base, g, -1000, 1000) : Tensor::randn(v.base, g, 0, 3, src_dt);
      // Gather: strided source into a packed destination.
      Tensor want = Tensor::empty(v.shape, dst_dt);
      want.copy_(base.as_strided(v.shape, v.strides, v.offset));
      Tensor got = Tensor::empty(v.shape, dst_dt, Device::cuda());
      got.copy_(base.to(Device::cuda()).as_strided(v.shape, v.strides, v.offset));
      EXPECT_EQ(got.to(Device::cpu()).to_vector(), want.to_vector()) << "gather: " << tag;
      // Scatter: packed source into a strided view of a destination that keeps its other elements (broadcast views
      // cannot be written).
      bool writes_once = true;
      for (int64_t s : v.strides) writes_once = writes_once && s != 0;
      if (!writes_once) continue;
      Tensor src = want.to(src_dt);
      Tensor dst_cpu = Tensor::full(v.base, -7, dst_dt);
      Tensor dst_gpu = dst_cpu.to(Device::cuda());
      dst_cpu.as_strided(v.shape, v.strides, v.offset).copy_(src);
      dst_gpu.as_strided(v.shape, v.strides, v.offset).copy_(src.to(Device::cuda()));
      EXPECT_EQ(dst_gpu.to(Device::cpu()).to_vector(), dst_cpu.to_vector()) << "scatter: " << tag;
    }
  }
}
