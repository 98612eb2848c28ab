// CUDA gradient checks (optim/grad_check.h on device gradients): the inf/NaN finder and the global norm against
// the CPU reference, f32 / bf16 / f16, awkward sizes and a bad element at the very end of a 1,000,003-element
// tensor.
#include <cmath>
#include <limits>

#include "optim/adamw.h"
#include "optim/grad_check.h"
#include "test_util.h"

using namespace mt;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Parameters with random gradients of the given sizes, built on the CPU (so single elements can be poisoned) and
// kept both on the CPU and on the GPU.
struct Pair {
  std::vector<Tensor> cpu, gpu;
  std::vector<Tensor*> cpu_ptrs() {
    std::vector<Tensor*> out;
    for (Tensor& t : cpu) out.push_back(&t);
    return out;
  }
  std::vector<Tensor*> gpu_ptrs() {
    std::vector<Tensor*> out;
    for (Tensor& t : gpu) out.push_back(&t);
    return out;
  }
};

// poison: (tensor index, element index, value) applied to the CPU gradient before the copy to the GPU.
struct Poison {
  size_t tensor;
  int64_t element;
  double value;
};

Pair make(const std::vector<int64_t>& sizes, DType dt, uint64_t seed, const std::vector<Poison>& poison = {},
          const std::vector<bool>& has_grad = {}) {
  Generator gen(seed);
  Pair p;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor g = Tensor::randn({sizes[i]}, gen, 0.0, 1.5, dt);
    for (const Poison& q : poison) {
      if (q.tensor == i) store_from_double(g.data_ptr(), dt, q.element, q.value);
    }
    Tensor pc = Tensor::zeros({sizes[i]}), pg = Tensor::zeros({sizes[i]}, DType::F32, Device::cuda());
    set_requires_grad(pc);
    set_requires_grad(pg);
    if (has_grad.empty() || has_grad[i]) {
      set_grad(pc, g);
      set_grad(pg, g.to(Device::cuda()));
    }
    p.cpu.push_back(pc);
    p.gpu.push_back(pg);
  }
  return p;
}

}  // namespace

TEST(CudaGradCheck, FindsInfMinusInfAndNaNInTheSecondOfThree) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (double bad : {kInf, -kInf, kNaN}) {
      Pair p = make({7, 257, 13}, dt, 11, {{1, 100, bad}});
      EXPECT_EQ(optim::first_nonfinite_grad(p.gpu_ptrs()), 1) << dtype_name(dt) << " " << bad;
      EXPECT_EQ(optim::first_nonfinite_grad(p.cpu_ptrs()), 1) << dtype_name(dt) << " " << bad;
    }
    Pair ok = make({1, 7, 257, 13}, dt, 12);
    EXPECT_EQ(optim::first_nonfinite_grad(ok.gpu_ptrs()), -1) << dtype_name(dt);
  }
}

TEST(CudaGradCheck, BadElementAtTheVeryEndOfALargeTensor) {
  MT_REQUIRE_CUDA();
  const int64_t n = 1000003;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (double bad : {kInf, kNaN}) {
      Pair p = make({1000, n, 5}, dt, 21, {{1, n - 1, bad}});
      EXPECT_EQ(optim::first_nonfinite_grad(p.gpu_ptrs()), 1) << dtype_name(dt) << " " << bad;
      const double norm = optim::grad_global_norm(p.gpu_ptrs());
      if (std::isnan(bad)) {
        EXPECT_TRUE(std::isnan(norm)) << dtype_name(dt);
      } else {
        EXPECT_EQ(norm, kInf) << dtype_name(dt);
      }
    }
    // ... and at the very first element
    Pair q = make({n}, dt, 22, {{0, 0, kNaN}});
    EXPECT_EQ(optim::first_nonfinite_grad(q.gpu_ptrs()), 0) << dtype_name(dt);
  }
}

TEST(CudaGradCheck, ManyTensorsFirstBadOneWinsAndParamsWithoutGradsAreSkipped) {
  MT_REQUIRE_CUDA();
  std::vector<int64_t> sizes;
  std::vector<bool> has_grad;
  for (int i = 0; i < 60; ++i) {
    sizes.push_back(1 + (i * 7919) % 5003);
    has_grad.push_back(i % 5 != 3);
  }
  // Tensor 23 has no gradient (23 % 5 == 3): its poison must be ignored; 37 and 41 are bad, 37 is reported.
  Pair p = make(sizes, DType::F32, 31, {{23, 0, kNaN}, {41, 0, kInf}, {37, sizes[37] - 1, kNaN}}, has_grad);
  EXPECT_EQ(optim::first_nonfinite_grad(p.gpu_ptrs()), 37);
  EXPECT_EQ(optim::first_nonfinite_grad(p.cpu_ptrs()), 37);
  Pair q = make(sizes, DType::F32, 32, {{23, 0, kNaN}}, has_grad);
  EXPECT_EQ(optim::first_nonfinite_grad(q.gpu_ptrs()), -1);
}

TEST(CudaGradNorm, MatchesTheCpuAndIsDeterministic) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Pair p = make({1, 7, 13, 257, 4099, 1000003}, dt, 41);
    const double cpu = optim::grad_global_norm(p.cpu_ptrs());
    const double gpu = optim::grad_global_norm(p.gpu_ptrs());
    ASSERT_TRUE(std::isfinite(gpu)) << dtype_name(dt);
    // Same stored values, both summed in double: only the summation order differs.
    EXPECT_NEAR(gpu, cpu, 1e-12 * cpu) << dtype_name(dt);
    EXPECT_EQ(optim::grad_global_norm(p.gpu_ptrs()), gpu) << "not deterministic, " << dtype_name(dt);
    EXPECT_EQ(optim::global_grad_norm(p.gpu_ptrs()), gpu) << dtype_name(dt);
  }
  // Hand value on the device: sqrt(9 + 16 + 144) = 13.
  Tensor a = Tensor::zeros({2}, DType::F32, Device::cuda()), b = Tensor::zeros({1}, DType::F32, Device::cuda());
  set_requires_grad(a);
  set_requires_grad(b);
  set_grad(a, Tensor::from_vector({3, 4}, {2}, DType::F32, Device::cuda()));
  set_grad(b, Tensor::from_vector({12}, {1}, DType::F32, Device::cuda()));
  EXPECT_EQ(optim::grad_global_norm({&a, &b}), 13.0);
}

TEST(CudaGradNorm, NaNOrInfInAnyTensorIsNeverHidden) {
  MT_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Pair a = make({13, 257, 7}, dt, 51, {{2, 6, -kInf}});
    EXPECT_EQ(optim::grad_global_norm(a.gpu_ptrs()), kInf) << dtype_name(dt);
    Pair b = make({13, 257, 7}, dt, 52, {{0, 0, kNaN}});
    EXPECT_TRUE(std::isnan(optim::grad_global_norm(b.gpu_ptrs()))) << dtype_name(dt);
    Pair c = make({13, 257, 7}, dt, 53, {{0, 0, kInf}, {1, 5, kNaN}});
    EXPECT_FALSE(std::isfinite(optim::grad_global_norm(c.gpu_ptrs()))) << dtype_name(dt);
    EXPECT_TRUE(std::isnan(optim::clip_factor(optim::grad_global_norm(c.gpu_ptrs()), 1.0)));
  }
}

TEST(CudaGradCheck, NonContiguousDeviceGradient) {
  MT_REQUIRE_CUDA();
  Tensor g = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  store_from_double(g.data_ptr(), DType::F32, 5, kNaN);
  Tensor p = Tensor::zeros({2, 3}, DType::F32, Device::cuda());
  set_requires_grad(p);
  set_grad(p, g.to(Device::cuda()).as_strided({2, 3}, {1, 2}, 0));
  EXPECT_EQ(optim::first_nonfinite_grad({&p}), 0);
  EXPECT_TRUE(std::isnan(optim::grad_global_norm({&p})));
}
