#include "core/cuda/dtype_cuda.cuh"
#include "kernels/adamw.h"

#include <vector>

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

template <typename G>
__global__ void sumsq_kernel(const G* g, int64_t n, double* out) {
  double s = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(cuda::load(g, i));
    s += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  __shared__ double warp_sums[32];
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x + 31) / 32; ++w) t += warp_sums[w];
    out[blockIdx.x] = t;  // one partial per block: a fixed-order sum on the host keeps it deterministic
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

double sum_squares_cuda(const void* grad, DType dtype, int64_t n) {
  if (n == 0) return 0.0;
  const int blocks = cuda::grid_for(n);
  double* partial = nullptr;
  MT_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(double) * blocks, cuda::stream()));
  cuda::dispatch_float(dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    sumsq_kernel<G><<<blocks, 256, 0, cuda::stream()>>>(static_cast<const G*>(grad), n, partial);
    MT_CUDA_CHECK_LAUNCH();
  });
  std::vector<double> host(blocks);
  MT_CUDA_CHECK(cudaMemcpyAsync(host.data(), partial, sizeof(double) * blocks, cudaMemcpyDeviceToHost, cuda::stream()));
  MT_CUDA_CHECK(cudaFreeAsync(partial, cuda::stream()));
  MT_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  double s = 0;
  for (double v : host) s += v;
  return s;
}

}  // namespace mt::kernels
