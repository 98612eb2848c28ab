// CUDA AdamW: the multi-tensor update (many tensors per launch, f32 and bf16 gradients, awkward sizes, more
// tensors than one launch holds) equals the one-tensor kernel bit for bit and the CPU update within f32 rounding.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/autograd.h"
#include "kernels/adamw.h"
#include "optim/adamw.h"
#include "test_util.h"

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
