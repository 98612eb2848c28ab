// CUDA AdamW: one tensor per launch (adamw_cuda) or up to kAdamWMaxTensors per launch (adamw_multi_cuda), both
// through the same per-element update.
#include <map>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/adamw.h"

namespace mt::kernels {

namespace {

struct Hyper {
  float lr, beta1, beta2, eps, bias_correction1, bias_correction2, grad_scale;
};

Hyper hyper_of(const AdamWParams& p) {
  return {p.lr, p.beta1, p.beta2, p.eps, p.bias_correction1, p.bias_correction2, p.grad_scale};
}

template <typename G>
__device__ __forceinline__ void update_one(const Hyper& h, float wd, float* param, const G* g, float* exp_avg,
                                           float* exp_avg_sq, int64_t i) {
  const float gi = static_cast<float>(cuda::load(g, i)) * h.grad_scale;
  const float m = h.beta1 * exp_avg[i] + (1 - h.beta1) * gi;
  const float v = h.beta2 * exp_avg_sq[i] + (1 - h.beta2) * gi * gi;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  const float denom = sqrtf(v / h.bias_correction2) + h.eps;
  param[i] -= h.lr * ((m / h.bias_correction1) / denom + wd * param[i]);
}

template <typename G>
__global__ void adamw_kernel(AdamWParams p, Hyper h) {
  const G* g = static_cast<const G*>(p.grad);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    update_one(h, p.weight_decay, p.param, g, p.exp_avg, p.exp_avg_sq, i);
}

struct Batch {
  int count;
  float* param[kAdamWMaxTensors];
  const void* grad[kAdamWMaxTensors];
  float* exp_avg[kAdamWMaxTensors];
  float* exp_avg_sq[kAdamWMaxTensors];
  int64_t n[kAdamWMaxTensors];
  float wd[kAdamWMaxTensors];
};
static_assert(sizeof(Batch) + sizeof(Hyper) < 4000, "kernel argument too large");

template <typename G>
__global__ void adamw_multi_kernel(Batch b, Hyper h) {
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int k = 0; k < b.count; ++k) {
    const G* g = static_cast<const G*>(b.grad[k]);
    for (int64_t i = start; i < b.n[k]; i += stride)
      update_one(h, b.wd[k], b.param[k], g, b.exp_avg[k], b.exp_avg_sq[k], i);
  }
}

}  // namespace

void adamw_cuda(const AdamWParams& p) {
  if (p.n == 0) return;
  cuda::dispatch_float(p.grad_dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    adamw_kernel<G><<<cuda::grid_for(p.n), 256, 0, cuda::stream()>>>(p, hyper_of(p));
    MT_CUDA_CHECK_LAUNCH();
  });
}

void adamw_multi_cuda(const AdamWParams& common, const std::vector<AdamWTensor>& ts) {
  const Hyper h = hyper_of(common);
  std::map<DType, std::vector<const AdamWTensor*>> by_dtype;
  for (const AdamWTensor& t : ts)
    if (t.n > 0) by_dtype[t.grad_dtype].push_back(&t);
  for (auto& kv : by_dtype) {
    cuda::dispatch_float(kv.first, [&](auto tag) {
      using G = typename decltype(tag)::type;
      const std::vector<const AdamWTensor*>& list = kv.second;
      for (size_t first = 0; first < list.size(); first += kAdamWMaxTensors) {
        Batch b{};
        int64_t largest = 0;
        for (size_t k = first; k < list.size() && k < first + kAdamWMaxTensors; ++k) {
          const AdamWTensor& t = *list[k];
          const int j = b.count++;
          b.param[j] = t.param;
          b.grad[j] = t.grad;
          b.exp_avg[j] = t.exp_avg;
          b.exp_avg_sq[j] = t.exp_avg_sq;
          b.n[j] = t.n;
          b.wd[j] = t.weight_decay;
          largest = std::max(largest, t.n);
        }
        adamw_multi_kernel<G><<<cuda::grid_for(largest), 256, 0, cuda::stream()>>>(b, h);
        MT_CUDA_CHECK_LAUNCH();
      }
    });
  }
}

}  // namespace mt::kernels
