#include "core/cuda/dtype_cuda.cuh"
#include "kernels/pool.h"

namespace mt::kernels {

namespace {

// One thread per (b, d); a sequential walk over L (pooling is a tiny part of a step).
template <typename T>
__global__ void pool_fwd_kernel(PoolParams p) {
  using C = typename cuda::Compute<T>::type;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.B * p.D;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / p.D, d = i % p.D;
    C acc = 0, count = 0;
    int64_t idx = -1;
    for (int64_t t = 0; t < p.L; ++t) {
      if (p.mask && p.mask[b * p.L + t] == 0.0f) continue;
      const C v = cuda::load(x, (b * p.L + t) * p.D + d);
      count += 1;
      if (p.mode == PoolMode::Mean) {
        acc += v;
      } else if (p.mode == PoolMode::Max) {
        if (idx < 0 || v > acc) {
          acc = v;
          idx = t;
        }
      } else {
        acc = v;
        idx = t;
      }
    }
    if (p.mode == PoolMode::Mean) acc = count > 0 ? acc / count : C(0);
    if (idx < 0 && p.mode != PoolMode::Mean) acc = 0;
    out[i] = cuda::from_compute<T>(acc);
    if (p.index) p.index[i] = idx;
  }
}

template <typename T>
__global__ void pool_bwd_kernel(PoolParams p) {
  using C = typename cuda::Compute<T>::type;
  const T* g = static_cast<const T*>(p.grad_out);
  T* gx = static_cast<T*>(p.grad_x);
  const int64_t n = p.B * p.L * p.D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % p.D, t = (i / p.D) % p.L, b = i / (p.D * p.L);
    C v = 0;
    if (p.mode == PoolMode::Mean) {
      const bool real = !p.mask || p.mask[b * p.L + t] != 0.0f;
      if (real) {
        C count = 0;
        for (int64_t s = 0; s < p.L; ++s) count += (!p.mask || p.mask[b * p.L + s] != 0.0f) ? 1 : 0;
        v = cuda::load(g, b * p.D + d) / count;
      }
    } else if (p.index[b * p.D + d] == t) {
      v = cuda::load(g, b * p.D + d);
    }
    gx[i] = cuda::from_compute<T>(v);
  }
}

}  // namespace

void pool_fwd_cuda(const PoolParams& p) {
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pool_fwd_kernel<T><<<cuda::grid_for(p.B * p.D), 256, 0, cuda::stream()>>>(p);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void pool_bwd_cuda(const PoolParams& p) {
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pool_bwd_kernel<T><<<cuda::grid_for(p.B * p.L * p.D), 256, 0, cuda::stream()>>>(p);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mt::kernels
