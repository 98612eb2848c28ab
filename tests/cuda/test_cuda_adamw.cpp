// CUDA AdamW: the multi-tensor update (many tensors per launch, f32 and bf16 gradients, awkward sizes, more
// tensors than one launch holds) equals the one-tensor kernel bit for bit and the CPU update within f32 rounding,
// the bf16 / f16 weight copies it writes equal cast() of the new masters, and writing them changes nothing else.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "kernels/adamw.h"
#include "optim/adamw.h"
#include "test_util.h"
#include "weight_grad_check.h"

using namespace mt;

TEST(CudaAdamW, MultiTensorEqualsOneTensorKernelsAndTheCpu) {
  MT_REQUIRE_CUDA();
  Generator gen(3);
  std::vector<int64_t> sizes;
  for (int i = 0; i < 2 * kernels::kAdamWMaxTensors + 5; ++i) sizes.push_back(i % 7 == 0 ? 4097 + i : 1 + 13 * i);
  sizes.push_back(1000003);
  struct Set {
    std::vector<Tensor> p, g;
  } cpu, gpu, single;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = Tensor::randn({sizes[i]}, gen, 0.0, 1.0, DType::F32);
    Tensor g = Tensor::randn({sizes[i]}, gen, 0.0, 2.0, DType::F32);
    if (i % 3 == 1) g = g.to(DType::BF16);  // bf16 and f32 gradients in one step
    cpu.p.push_back(p.clone());
    cpu.g.push_back(g.to(DType::F32));  // the CPU update takes f32; same (bf16-rounded) values
    gpu.p.push_back(p.to(Device::cuda()));
    gpu.g.push_back(g.to(Device::cuda()));
    single.p.push_back(p.to(Device::cuda()));
    single.g.push_back(g.to(Device::cuda()));
  }
  auto named = [](std::vector<Tensor>& ps) {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (size_t i = 0; i < ps.size(); ++i) out.emplace_back(i % 2 ? "l.weight" : "l.bias", &ps[i]);
    return out;
  };
  optim::AdamWOptions o;
  o.lr = 3e-3;
  optim::AdamW oc(named(cpu.p), o), og(named(gpu.p), o), os(named(single.p), o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      set_grad(cpu.p[i], cpu.g[i]);
      set_grad(gpu.p[i], gpu.g[i]);
    }
    oc.step(1e-3, 0.5);
    og.step(1e-3, 0.5);
    // The same update one tensor per launch, through adamw_cuda.
    const double bc1 = 1 - std::pow(o.beta1, step + 1.0), bc2 = 1 - std::pow(o.beta2, step + 1.0);
    for (size_t i = 0; i < sizes.size(); ++i) {
      optim::ParamEntry& e = os.entries()[i];
      kernels::AdamWParams p;
      p.param = single.p[i].data<float>();
      p.grad = single.g[i].data_ptr();
      p.grad_dtype = single.g[i].dtype();
      p.exp_avg = e.exp_avg.data<float>();
      p.exp_avg_sq = e.exp_avg_sq.data<float>();
      p.n = sizes[i];
      p.lr = 1e-3f;
      p.beta1 = static_cast<float>(o.beta1);
      p.beta2 = static_cast<float>(o.beta2);
      p.eps = static_cast<float>(o.eps);
      p.weight_decay = e.decay ? static_cast<float>(o.weight_decay) : 0.0f;
      p.bias_correction1 = static_cast<float>(bc1);
      p.bias_correction2 = static_cast<float>(bc2);
      p.grad_scale = 0.5f;
      kernels::adamw_cuda(p);
    }
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(gpu.p[i].to_vector(), single.p[i].to_vector()) << "tensor " << i << " of " << sizes[i];
    EXPECT_EQ(og.entries()[i].exp_avg_sq.to_vector(), os.entries()[i].exp_avg_sq.to_vector()) << i;
    EXPECT_LE(test::tolerance_ratio(gpu.p[i].to_vector(), cpu.p[i].to_vector(), 1e-6, 1e-5), 1.0) << i;
  }
}

// The weight copy on the GPU: the multi-tensor update writes bf16 and f16 copies (tensors of awkward sizes, more
// than one launch holds, mixed with tensors that have none) equal bit for bit to cast() of the new master, and the
// one-tensor kernel and the CPU update write the same copies.
TEST(CudaAdamW, WritesTheWeightCopyBitwiseEqualToCast) {
  MT_REQUIRE_CUDA();
  Generator gen(5);
  std::vector<int64_t> sizes;
  for (int i = 0; i < kernels::kAdamWMaxTensors + 9; ++i) sizes.push_back(i % 5 == 0 ? 70001 + 3 * i : 1 + 29 * i);
  std::vector<Tensor> gp, cp;
  std::vector<DType> copy_dtype;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = Tensor::randn({sizes[i]}, gen, 0.0, 1.0, DType::F32);
    gp.push_back(p.to(Device::cuda()));
    cp.push_back(p.clone());
    set_requires_grad(gp.back());
    set_requires_grad(cp.back());
    copy_dtype.push_back(i % 3 == 0 ? DType::F32 : i % 3 == 1 ? DType::BF16 : DType::F16);  // f32: no copy
    if (copy_dtype[i] != DType::F32) {
      cached_cast(gp[i], copy_dtype[i]);
      cached_cast(cp[i], copy_dtype[i]);
    }
  }
  std::vector<std::pair<std::string, Tensor*>> ng, nc;
  for (size_t i = 0; i < sizes.size(); ++i) {
    ng.emplace_back("l" + std::to_string(i) + ".weight", &gp[i]);
    nc.emplace_back("l" + std::to_string(i) + ".weight", &cp[i]);
  }
  optim::AdamWOptions o;
  o.lr = 1e-2;
  optim::AdamW og(ng, o), oc(nc, o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      Tensor g = Tensor::randn({sizes[i]}, gen, 0.0, 2.0, DType::F32);
      if (i % 2) g = g.to(DType::BF16);  // bf16 gradients (as the GEMMs give) for every other tensor
      set_grad(gp[i], g.to(Device::cuda()));
      set_grad(cp[i], g.to(DType::F32));  // the CPU update takes f32: the same (bf16-rounded) values
    }
    og.step(1e-2, 0.5);
    oc.step(1e-2, 0.5);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (copy_dtype[i] == DType::F32) {
      EXPECT_FALSE(gp[i].impl().converted) << i;
      continue;
    }
    const Storage* before = gp[i].impl().converted->storage.get();
    Tensor c = cached_cast(gp[i], copy_dtype[i]);  // fresh: reused, not re-cast
    EXPECT_EQ(c.storage().get(), before) << "tensor " << i;
    Tensor cc = cached_cast(cp[i], copy_dtype[i]);
    NoGradGuard ngd;
    EXPECT_EQ(c.to_vector(), gp[i].detach().to(copy_dtype[i]).to_vector()) << "tensor " << i << " of " << sizes[i];
    // The CPU update agrees with the GPU's to f32 rounding; its copy is cast() of its own master.
    EXPECT_EQ(cc.to_vector(), cp[i].detach().to(copy_dtype[i]).to_vector()) << i;
    EXPECT_LE(test::tolerance_ratio(gp[i].to_vector(), cp[i].to_vector(), 1e-6, 1e-5), 1.0) << i;
  }
}

// The one-tensor kernel writes the same copy as the multi-tensor one.
TEST(CudaAdamW, OneTensorKernelWritesTheSameCopy) {
  MT_REQUIRE_CUDA();
  Generator gen(6);
  const int64_t n = 100003;
  Tensor p = Tensor::randn({n}, gen, 0.0, 1.0, DType::F32, Device::cuda());
  Tensor g = Tensor::randn({n}, gen, 0.0, 1.0, DType::BF16, Device::cuda());
  Tensor m = Tensor::zeros({n}, DType::F32, Device::cuda()), v = Tensor::zeros({n}, DType::F32, Device::cuda());
  for (DType cd : {DType::BF16, DType::F16}) {
    Tensor copy = Tensor::full({n}, 9.0, cd, Device::cuda());
    kernels::AdamWParams a;
    a.param = p.data<float>();
    a.grad = g.data_ptr();
    a.grad_dtype = DType::BF16;
    a.exp_avg = m.data<float>();
    a.exp_avg_sq = v.data<float>();
    a.copy = copy.data_ptr();
    a.copy_dtype = cd;
    a.n = n;
    a.lr = 1e-2f;
    a.beta1 = 0.9f;
    a.beta2 = 0.95f;
    a.eps = 1e-8f;
    a.weight_decay = 0.1f;
    a.bias_correction1 = 0.1f;
    a.bias_correction2 = 0.05f;
    kernels::adamw_cuda(a);
    EXPECT_EQ(copy.to_vector(), p.to(cd).to_vector()) << dtype_name(cd);
  }
}

// Writing a weight copy does not change the update: the same tensors with bf16 / f16 copies and without any give
// the same masters and moments bit for bit (f32 and bf16 gradients, sizes not multiples of anything).
TEST(CudaAdamW, TheUpdateDoesNotDependOnTheCopy) {
  MT_REQUIRE_CUDA();
  Generator gen(7);
  const std::vector<int64_t> sizes = {1, 3, 4, 5, 7, 8, 1023, 4099, 65536, 250001};
  std::vector<Tensor> with, without, grads;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = Tensor::randn({sizes[i]}, gen, 0.0, 1.0, DType::F32, Device::cuda());
    with.push_back(p.clone());
    without.push_back(p.clone());
    set_requires_grad(with.back());
    set_requires_grad(without.back());
    grads.push_back(Tensor::randn({sizes[i]}, gen, 0.0, 1.0, i % 2 ? DType::BF16 : DType::F32, Device::cuda()));
  }
  std::vector<std::pair<std::string, Tensor*>> nw, nn;
  for (size_t i = 0; i < sizes.size(); ++i) {
    nw.emplace_back("a" + std::to_string(i) + ".weight", &with[i]);
    nn.emplace_back("a" + std::to_string(i) + ".weight", &without[i]);
    cached_cast(with[i], i % 3 ? DType::BF16 : DType::F16);
  }
  optim::AdamWOptions o;
  o.lr = 1e-2;
  optim::AdamW ow(nw, o), on(nn, o);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      set_grad(with[i], grads[i]);
      set_grad(without[i], grads[i]);
    }
    ow.step(1e-2, 0.25);
    on.step(1e-2, 0.25);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(with[i].impl().converted) << sizes[i];
    EXPECT_FALSE(without[i].impl().converted) << sizes[i];
    EXPECT_EQ(with[i].to_vector(), without[i].to_vector()) << sizes[i];
    EXPECT_EQ(ow.entries()[i].exp_avg.to_vector(), on.entries()[i].exp_avg.to_vector()) << sizes[i];
    EXPECT_EQ(ow.entries()[i].exp_avg_sq.to_vector(), on.entries()[i].exp_avg_sq.to_vector()) << sizes[i];
  }
}

// The gradient of a bf16 weight copy reaches its f32 master as the GEMM's (the embedding's) f32 sum, unrounded.
TEST(CudaWeightCopy, GradientsReachTheMasterUnrounded) {
  MT_REQUIRE_CUDA();
  testing_weight_grad::expect_unrounded_weight_grads(Device::cuda());
}
