// Launch helpers of the single-token decode kernels (decode_gemv, ssm_step, sampling).
//
// Programmatic dependent launch (PDL, sm_90): a kernel launched with `pdl` may start while the previous kernel on
// the stream is still running. Each decode kernel first issues the loads that do not depend on earlier kernels
// (weights), then waits in pdl_wait() until the previous grid has completed and its writes are visible, and only
// then reads activations or writes anything; right after the wait it lets the next kernel launch
// (pdl_launch_dependents). Since every kernel completes only after its own wait returned, each one also runs after
// all earlier kernels, as without PDL; at most two grids are resident at a time. Without the attribute, or below
// sm_90, the two calls do nothing.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/detail/l2_prefetch.h"

namespace mt::kernels::decode_cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Issues the L2 prefetches of pf (kernels/detail/l2_prefetch.h) in chunks of 32 KB, chunk c by thread c / blocks of
// block c % blocks, so that the copy engines of all the grid's SMs take a share. sm_90 (a bulk prefetch) only.
__device__ __forceinline__ void l2_prefetch(const L2Prefetch& pf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int64_t kChunk = 32 * 1024;
  const int64_t blocks = static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z;
  const int64_t block = (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t thread = (static_cast<int64_t>(threadIdx.z) * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int64_t first = thread * blocks + block, step = blocks * blockDim.x * blockDim.y * blockDim.z;
#pragma unroll 1
  for (int i = 0; i < L2Prefetch::kMax; ++i) {
    const char* base = static_cast<const char*>(pf.ptr[i]);
    const int64_t n = pf.bytes[i];
    for (int64_t c = first; base != nullptr && c * kChunk < n; c += step) {
      const int64_t off = c * kChunk, len = (n - off < kChunk ? n - off : kChunk) & ~int64_t{15};
      if (len > 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(base + off), "r"(static_cast<unsigned>(len))
                     : "memory");
    }
  }
#endif
}

// kernel<<<grid, block, smem, the context's stream>>>(args...), with the PDL attribute when pdl is set.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, bool pdl, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = cuda::stream();
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = pdl ? attr : nullptr;
  cfg.numAttrs = pdl ? 1 : 0;
  MT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// v stored in T and read back: the rounding the parallel model applies where it stores an activation in T.
template <typename T>
__device__ __forceinline__ typename cuda::Compute<T>::type round_to(typename cuda::Compute<T>::type v) {
  const T t = cuda::from_compute<T>(v);
  return cuda::load(&t, 0);
}

// dst[i] = f(src[i]) for i = i0, i0 + step, ... below n, U loads issued before any of their stores: a thread's copy
// into shared memory costs one memory round trip per U elements, not one per element (a loop that stores each value
// before loading the next waits for every load in turn).
template <int U, typename D, typename S, typename F>
__device__ __forceinline__ void batched_copy(D* dst, const S* src, int64_t i0, int64_t n, int64_t step, F f) {
  for (int64_t i = i0; i < n; i += U * step) {
    S v[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i + u * step < n) v[u] = src[i + u * step];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i + u * step < n) dst[i + u * step] = f(v[u]);
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

}  // namespace mt::kernels::decode_cuda
