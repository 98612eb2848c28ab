// CUDA decode step (kernels/decode_step.h).
//
// Persistent: one cooperative grid of up to 2 blocks of 256 threads per SM, all resident at once. The step is a list
// of phases, each one call of the separate path (in_proj + conv + x_proj partials, the state update, out_proj per
// layer; then the LM head); block i runs the call's blocks i, i + grid, ... with the same block body as the separate
// kernel (kernels/cuda/decode_gemv.cuh, ssm_step.cuh). Where the separate kernel waits for the previous one (PDL),
// the block instead arrives at a grid-wide barrier and waits for every block to finish the previous phase, so its
// weight loads are again in flight during the wait. A batch-1 layer is three dependent steps of a few microseconds;
// a barrier costs less than a kernel boundary. The LM head's blocks of one grid block share one input stage (the
// final norm), which the separate kernel recomputes in each of its 3,000-odd blocks.
//
// Memory: activations written in one phase are read in later phases by other blocks, so they are read with plain
// (coherent) loads after the barrier's fences; only weights go through the read-only path.
#include <algorithm>

#include "core/cuda_context.h"
#include "kernels/cuda/decode_gemv.cuh"
#include "kernels/cuda/ssm_step.cuh"
#include "kernels/decode_step.h"

namespace mt::kernels {

namespace {

using namespace decode_cuda;

constexpr int kUpdateTpc = 16;  // the state update's threads per channel (as ssm_step chooses below a wave)
constexpr int kMaxBlocksPerSm = 2;

// Grid-wide barrier number n (1, 2, ...): thread 0 of each block counts its arrival and waits for n * gridDim.x
// arrivals. The fences order the block's writes before its arrival and the other blocks' writes before what the
// block reads afterwards; __syncthreads carries both to the block's other threads.
// A wait of more than kBarrierSpins reads of the counter (several seconds at a few hundred nanoseconds a read: the
// grid's blocks are not all running, a bug) traps, so that the launch fails with an error instead of hanging. The trap
// sits in a function of its own: inlined, it made the kernel spill three times as much.
constexpr unsigned kBarrierSpins = 1u << 25;

__device__ __noinline__ void barrier_timed_out() { __trap(); }

__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned n) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    const unsigned target = n * gridDim.x;
    unsigned seen = 0, spins = 0;
    for (;;) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (seen >= target) break;
      if (++spins == kBarrierSpins) barrier_timed_out();
    }
    __threadfence();
  }
  __syncthreads();
}

// One phase: `tasks` blocks of a call, block t run as body(t, wait, again) by grid block t % gridDim.x (again: not
// its first block of the phase). With sync, the first wait() of each grid block is barrier number ++n (a block
// with no task still arrives); without, wait() does nothing.
template <typename Body>
__device__ __forceinline__ void phase(int64_t tasks, bool sync, unsigned* counter, unsigned& n, Body&& body) {
  if (sync) ++n;
  bool waited = !sync;
  auto wait = [&] {
    if (!waited) {
      grid_barrier(counter, n);
      waited = true;
    }
  };
  for (int64_t t = blockIdx.x; t < tasks; t += gridDim.x) {
    body(t, wait, t != blockIdx.x);
    __syncthreads();  // shared memory is reused by the next block
  }
  wait();
}

int64_t update_channel_blocks(const DecodeStepParams& p) {
  return (p.d_inner + kUpdateThreads / kUpdateTpc - 1) / (kUpdateThreads / kUpdateTpc);
}

template <typename T, int BT>
__global__ void __launch_bounds__(kThreads, kMaxBlocksPerSm)
    decode_step_kernel(const __grid_constant__ DecodeStepParams p) {
  unsigned n = 0;
  const int64_t in_tasks = (2 * p.d_inner + kWarps * 2 - 1) / (kWarps * 2);
  const int64_t upd_cb = (p.d_inner + kUpdateThreads / kUpdateTpc - 1) / (kUpdateThreads / kUpdateTpc);
  const int64_t upd_tasks = upd_cb * p.B;
  const int64_t out_tasks = (p.d_model + kWarps - 1) / kWarps;
  const int64_t lm_tasks = (p.V + kWarps * 2 - 1) / (kWarps * 2);
  for (int64_t l = 0; l < p.n_layer; ++l) {
    const DecodeGemvParams gi = decode_step_in_proj(p, l);
    phase(in_tasks, l > 0, p.barrier, n,
          [&](int64_t t, auto& wait, bool) { gemv_block<T, BT, 2>(gi, t, false, wait); });
    const SsmStepParams s = decode_step_ssm(p, l);
    phase(upd_tasks, true, p.barrier, n,
          [&](int64_t t, auto& wait, bool) { ssm_update_block<T, kUpdateTpc>(s, t % upd_cb, t / upd_cb, wait); });
    const DecodeGemvParams go = decode_step_out_proj(p, l);
    phase(out_tasks, true, p.barrier, n,
          [&](int64_t t, auto& wait, bool) { gemv_block<T, BT, 1>(go, t, false, wait); });
  }
  if (!p.last) return;
  const DecodeGemvParams gl = decode_step_lm_head(p);
  phase(lm_tasks, true, p.barrier, n,
        [&](int64_t t, auto& wait, bool again) { gemv_block<T, BT, 2>(gl, t, again, wait); });
}

template <typename T>
size_t step_smem_bytes(const DecodeStepParams& p, int BT) {
  using C = typename cuda::Compute<T>::type;
  const int64_t E = p.R + 2 * p.N;
  const size_t upd =
      static_cast<size_t>(E + decode::ssm_step_groups(E, decode_xproj_partials(p.d_inner)) * E) * sizeof(C);
  return std::max({gemv_smem_bytes<T>(BT, p.d_model, true), gemv_smem_bytes<T>(BT, p.d_inner, false), upd});
}

// Blocks per SM the persistent kernel gets (0: it does not fit).
template <typename T, int BT>
int blocks_per_sm(size_t smem) {
  auto kernel = decode_step_kernel<T, BT>;
  if (smem > CudaContext::get().props().sharedMemPerBlockOptin) return 0;
  if (smem > 48 * 1024)
    MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  MT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  return std::min(per_sm, kMaxBlocksPerSm);
}

template <typename F>
void dispatch_step(const DecodeStepParams& p, F&& f) {
  auto by_batch = [&](auto tag) {
    if (p.B <= 1)
      f(tag, std::integral_constant<int, 1>{});
    else
      f(tag, std::integral_constant<int, 2>{});
  };
  switch (p.dtype) {
    case DType::F32: by_batch(cuda::TypeTag<float>{}); return;
    case DType::BF16: by_batch(cuda::TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: by_batch(cuda::TypeTag<__half>{}); return;
    default:
      throw Error(ErrorKind::Shape, str("decode_step on CUDA takes f32, bf16 or f16, got ", dtype_name(p.dtype)));
  }
}

}  // namespace

bool decode_step_cuda_persistent_supports(const DecodeStepParams& p) {
  static_assert(kDecodeStepMaxBatch <= 2, "dispatch_step instantiates batches 1 and 2");
  if (p.B < 1 || p.B > kDecodeStepMaxBatch || p.n_layer < 1 || p.n_layer > kDecodeStepMaxLayers) return false;
  if (p.dtype != DType::F32 && p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  if (!decode_gemv_cuda_supports(p.B, p.d_model, p.K) || !decode_gemv_cuda_supports(p.B, p.d_inner, 1)) return false;
  const CudaContext& ctx = CudaContext::get();
  if (!ctx.props().cooperativeLaunch) return false;
  // The separate path's state update takes 16 threads per channel below about one wave (ssm_step_cuda); the
  // persistent kernel always does, so it only runs where both agree.
  if (update_channel_blocks(p) * p.B > 8 * static_cast<int64_t>(ctx.sm_count())) return false;
  bool fits = false;
  dispatch_step(p, [&](auto tag, auto bt) {
    using T = typename decltype(tag)::type;
    fits = blocks_per_sm<T, decltype(bt)::value>(step_smem_bytes<T>(p, decltype(bt)::value)) >= 1;
  });
  return fits;
}

void decode_step_cuda(const DecodeStepParams& p) {
  decode_step_check(p);
  if (p.B == 0) return;
  if (!p.persistent) {
    for (int64_t l = 0; l < p.n_layer; ++l) {
      decode_gemv_cuda(decode_step_in_proj(p, l));
      ssm_step_cuda(decode_step_ssm(p, l));
      decode_gemv_cuda(decode_step_out_proj(p, l));
    }
    if (p.last) decode_gemv_cuda(decode_step_lm_head(p));
    return;
  }
  MT_CHECK(decode_step_cuda_persistent_supports(p), ErrorKind::Shape, "decode_step_cuda: batch ", p.B, ", ", p.n_layer,
           " layers, d_model ", p.d_model, ", d_inner ", p.d_inner,
           " not supported by the persistent kernel (decode_step_cuda_persistent_supports)");
  MT_ASSERT(p.barrier, "decode_step: missing barrier counter");
  const CudaContext& ctx = CudaContext::get();
  dispatch_step(p, [&](auto tag, auto bt) {
    using T = typename decltype(tag)::type;
    constexpr int BT = decltype(bt)::value;
    const size_t smem = step_smem_bytes<T>(p, BT);
    const int grid = blocks_per_sm<T, BT>(smem) * ctx.sm_count();
    MT_CUDA_CHECK(cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), cuda::stream()));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(grid));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cuda::stream();
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    MT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_step_kernel<T, BT>, p));
  });
}

}  // namespace mt::kernels
