#include "core/cuda/dtype_cuda.cuh"
#include "kernels/adamw.h"


namespace mt::kernels {

namespace {
template <typename G>
__global__ void adamw_kernel(AdamWParams p) {
  const G* g = static_cast<const G*>(p.grad);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = static_cast<float>(cuda::load(g, i)) * p.grad_scale;
    const float m = p.beta1 * p.exp_avg[i] + (1 - p.beta1) * gi;
    const float v = p.beta2 * p.exp_avg_sq[i] + (1 - p.beta2) * gi * gi;
    p.exp_avg[i] = m;
    p.exp_avg_sq[i] = v;
    const float denom = sqrtf(v / p.bias_correction2) + p.eps;
    p.param[i] -= p.lr * ((m / p.bias_correction1) / denom + p.weight_decay * p.param[i]);
  }
}

}  // namespace

void adamw_cuda(const AdamWParams& p) {
  if (p.n == 0) return;
  cuda::dispatch_float(p.grad_dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    adamw_kernel<G><<<cuda::grid_for(p.n), 256, 0, cuda::stream()>>>(p);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mt::kernels
