// CUDA selective scan, forward and backward (math in kernels/selective_scan.h). A first, correct version:
//
// Forward: one thread per (b, d) channel walking t with its N states in registers. A block holds kThreads
// consecutive channels of one batch row, so Bm_t, Cm_t and the mask are the same for all its threads: they are
// staged in shared memory, kFwdChunk timesteps at a time, by coalesced cooperative loads.
//
// Backward: one thread per (b, d) channel again.
//   Phase 1 walks t forward and stores only the state at each chunk boundary (chunk = kBwdChunk(N) timesteps)
//           into a workspace: ws_bound[k][n][b*D + d] = h before chunk k.
//   Phase 2 walks the chunks last to first: it recomputes the chunk's states from its boundary state into
//           ws_chunk[c][n][b*D + d] = h_{t0+c-1} (plus y0_t = sum_n C h_t + D u when z is given), then runs the
//           reverse recurrence over the chunk. Workspace layouts put b*D + d fastest so warps access it coalesced.
//   dB_t, dC_t (sums over d) are reduced over the warp with shuffles, over the block with shared atomics, and
//   over blocks with global fp32 atomicAdd (fp64 for f64); dA, dD, dbias (sums over b) with one global atomicAdd
//   per thread at the end. The result is therefore not bitwise deterministic (a deterministic variant is a
//   later issue).
// Every thread of a block runs every loop (threads past D contribute zeros) so that shuffles and barriers are
// uniform; the mask depends on (b, t) only, so masked steps are skipped uniformly too.
// N is a template bound NMAX in {16, 32, 64} with runtime loops `n < N`, so any N <= 64 works.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/selective_scan.h"

namespace mt::kernels {

namespace {

using mt::cuda::Compute;
using mt::cuda::from_compute;
using mt::cuda::load;

constexpr int kThreads = 128;
constexpr int kFwdChunk = 32;
// Backward chunk: kBwdChunk * NMAX = 1024 keeps the four shared [chunk, N] buffers at 16 KB (32 KB in f64).
template <int NMAX> struct BwdChunk { static constexpr int value = 1024 / NMAX; };

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }

template <typename W> __device__ __forceinline__ W softplus_(W x) {
  return x <= W(20) ? log1p_(exp_(x)) : x;  // threshold 20 as PyTorch / mamba
}
template <typename W> __device__ __forceinline__ W sigmoid_(W x) { return W(1) / (W(1) + exp_(-x)); }

// mask[i] != 0 for a mask of any dtype; true when there is no mask. For 16-bit floats, +-0 are "masked".
__device__ __forceinline__ bool mask_real(const void* m, DType dt, int64_t i) {
  if (m == nullptr) return true;
  switch (dt) {
    case DType::F32: return static_cast<const float*>(m)[i] != 0.0f;
    case DType::F64: return static_cast<const double*>(m)[i] != 0.0;
    case DType::BF16:
    case DType::F16: return (static_cast<const uint16_t*>(m)[i] & 0x7fffu) != 0;
    case DType::I32: return static_cast<const int32_t*>(m)[i] != 0;
    case DType::I64: return static_cast<const int64_t*>(m)[i] != 0;
  }
  return true;
}

template <typename W> __device__ __forceinline__ W warp_sum(W v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward. grid (ceil(D / kThreads), B), block kThreads.
template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads) scan_fwd_kernel(SelectiveScanParams p) {
  using W = typename Compute<T>::type;
  constexpr int CH = kFwdChunk;
  __shared__ W sB[CH * NMAX];
  __shared__ W sC[CH * NMAX];
  __shared__ bool sM[CH];

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int64_t b = blockIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = d < D;
  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* z = static_cast<const T*>(p.z);
  const T* Bm = static_cast<const T*>(p.Bm);
  const T* Cm = static_cast<const T*>(p.Cm);
  const W* A = static_cast<const W*>(p.A);
  const W* Dsk = static_cast<const W*>(p.D_skip);
  const W* bias_p = static_cast<const W*>(p.delta_bias);
  const W* init = static_cast<const W*>(p.initial_state);
  T* y = static_cast<T*>(p.y);
  W* last = static_cast<W*>(p.last_state);

  W h[NMAX], Ad[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    h[n] = W(0);
    Ad[n] = W(0);
    if (active && n < N) {
      Ad[n] = A[d * N + n];
      if (init) h[n] = init[(b * D + d) * N + n];
    }
  }
  const W Dd = (active && Dsk) ? Dsk[d] : W(0);
  const W bias = (active && bias_p) ? bias_p[d] : W(0);

  for (int64_t t0 = 0; t0 < L; t0 += CH) {
    const int len = static_cast<int>(L - t0 < CH ? L - t0 : CH);
    __syncthreads();  // the previous chunk's readers are done with sB / sC / sM
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kThreads) {
      sB[i] = load(Bm, base + i);
      sC[i] = load(Cm, base + i);
    }
    for (int i = threadIdx.x; i < len; i += kThreads) sM[i] = mask_real(p.mask, p.mask_dtype, b * L + t0 + i);
    __syncthreads();
    if (!active) continue;
    for (int c = 0; c < len; ++c) {
      const int64_t idx = (b * L + t0 + c) * D + d;
      if (!sM[c]) {
        y[idx] = from_compute<T>(W(0));
        continue;
      }
      W dt = load(delta, idx) + bias;
      if (p.delta_softplus) dt = softplus_(dt);
      const W uu = load(u, idx);
      W acc = W(0);
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          h[n] = exp_(dt * Ad[n]) * h[n] + dt * sB[c * N + n] * uu;
          acc += sC[c * N + n] * h[n];
        }
      }
      W yv = acc + Dd * uu;
      if (z) {
        const W zz = load(z, idx);
        yv *= zz * sigmoid_(zz);
      }
      y[idx] = from_compute<T>(yv);
    }
  }
  if (active) {
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) last[(b * D + d) * N + n] = h[n];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward. grid (ceil(D / kThreads), B), block kThreads.
//   ws_bound: [nchunks, N, B*D], ws_chunk: [CH, N, B*D], ws_y0: [CH, B*D] (used only with z).
template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads)
    scan_bwd_kernel(SelectiveScanParams p, typename Compute<T>::type* ws_bound, typename Compute<T>::type* ws_chunk,
                    typename Compute<T>::type* ws_y0) {
  using W = typename Compute<T>::type;
  constexpr int CH = BwdChunk<NMAX>::value;
  __shared__ W sB[CH * NMAX];
  __shared__ W sC[CH * NMAX];
  __shared__ W sdB[CH * NMAX];
  __shared__ W sdC[CH * NMAX];
  __shared__ bool sM[CH];

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int64_t BD = p.B * D;
  const int64_t b = blockIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = d < D;
  const int64_t bd = b * D + (active ? d : 0);
  const int lane = threadIdx.x & 31;
  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* z = static_cast<const T*>(p.z);
  const T* Bm = static_cast<const T*>(p.Bm);
  const T* Cm = static_cast<const T*>(p.Cm);
  const T* dy = static_cast<const T*>(p.dy);
  const W* A = static_cast<const W*>(p.A);
  const W* Dsk = static_cast<const W*>(p.D_skip);
  const W* bias_p = static_cast<const W*>(p.delta_bias);
  const W* init = static_cast<const W*>(p.initial_state);
  const W* dlast = static_cast<const W*>(p.dlast_state);
  T* du = static_cast<T*>(p.du);
  T* ddelta = static_cast<T*>(p.ddelta);
  T* dz = static_cast<T*>(p.dz);
  W* dA = static_cast<W*>(p.dA);
  W* dBm = static_cast<W*>(p.dBm);
  W* dCm = static_cast<W*>(p.dCm);
  W* dDsk = static_cast<W*>(p.dD_skip);
  W* dbias = static_cast<W*>(p.ddelta_bias);
  W* dinit = static_cast<W*>(p.dinitial_state);

  W Ad[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    h[n] = W(0);
    Ad[n] = W(0);
    if (active && n < N) {
      Ad[n] = A[d * N + n];
      if (init) h[n] = init[bd * N + n];
    }
  }
  const W Dd = (active && Dsk) ? Dsk[d] : W(0);
  const W bias = (active && bias_p) ? bias_p[d] : W(0);
  const int64_t nch = (L + CH - 1) / CH;

  // Stage Bm (and Cm) and the mask of timesteps [t0, t0 + len) into shared memory.
  auto stage = [&](int64_t t0, int len, bool with_c) {
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kThreads) {
      sB[i] = load(Bm, base + i);
      if (with_c) sC[i] = load(Cm, base + i);
    }
    for (int i = threadIdx.x; i < len; i += kThreads) sM[i] = mask_real(p.mask, p.mask_dtype, b * L + t0 + i);
  };

  // ---- phase 1: chunk-boundary states ----
  for (int64_t k = 0; k < nch; ++k) {
    const int64_t t0 = k * CH;
    const int len = static_cast<int>(L - t0 < CH ? L - t0 : CH);
    if (active) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) ws_bound[(k * N + n) * BD + bd] = h[n];
    }
    if (k == nch - 1) break;
    __syncthreads();
    stage(t0, len, false);
    __syncthreads();
    if (!active) continue;
    for (int c = 0; c < len; ++c) {
      if (!sM[c]) continue;
      const int64_t idx = (b * L + t0 + c) * D + d;
      W dt = load(delta, idx) + bias;
      if (p.delta_softplus) dt = softplus_(dt);
      const W uu = load(u, idx);
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) h[n] = exp_(dt * Ad[n]) * h[n] + dt * sB[c * N + n] * uu;
    }
  }

  // ---- phase 2: chunks last to first ----
  W g[NMAX], dA_acc[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    g[n] = (active && dlast && n < N) ? dlast[bd * N + n] : W(0);
    dA_acc[n] = W(0);
  }
  W dD_acc = W(0), dbias_acc = W(0);

  for (int64_t k = nch - 1; k >= 0; --k) {
    const int64_t t0 = k * CH;
    const int len = static_cast<int>(L - t0 < CH ? L - t0 : CH);
    __syncthreads();  // the previous chunk's flush of sdB / sdC is done
    stage(t0, len, true);
    for (int i = threadIdx.x; i < len * N; i += kThreads) {
      sdB[i] = W(0);
      sdC[i] = W(0);
    }
    __syncthreads();

    // Recompute this chunk's states from its boundary state (same expressions as the forward).
    if (active) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) h[n] = ws_bound[(k * N + n) * BD + bd];
      for (int c = 0; c < len; ++c) {
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
          if (n < N) ws_chunk[(static_cast<int64_t>(c) * N + n) * BD + bd] = h[n];
        if (!sM[c]) continue;
        const int64_t idx = (b * L + t0 + c) * D + d;
        W dt = load(delta, idx) + bias;
        if (p.delta_softplus) dt = softplus_(dt);
        const W uu = load(u, idx);
        W acc = W(0);
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
          if (n < N) {
            h[n] = exp_(dt * Ad[n]) * h[n] + dt * sB[c * N + n] * uu;
            acc += sC[c * N + n] * h[n];
          }
        }
        if (z) ws_y0[static_cast<int64_t>(c) * BD + bd] = acc + Dd * uu;
      }
    }

    // Reverse recurrence over the chunk; g = dLoss/dh_t.
    for (int c = len - 1; c >= 0; --c) {
      const int64_t idx = (b * L + t0 + c) * D + d;
      if (!sM[c]) {  // uniform over the block
        if (active) {
          du[idx] = from_compute<T>(W(0));
          ddelta[idx] = from_compute<T>(W(0));
          if (dz) dz[idx] = from_compute<T>(W(0));
        }
        continue;
      }
      W uu = W(0), dt_raw = W(0), dt = W(0), dy0 = W(0);
      if (active) {
        uu = load(u, idx);
        dt_raw = load(delta, idx) + bias;
        dt = p.delta_softplus ? softplus_(dt_raw) : dt_raw;
        const W gy = load(dy, idx);
        dy0 = gy;
        if (z) {
          const W zz = load(z, idx);
          const W s = sigmoid_(zz);
          const W y0 = ws_y0[static_cast<int64_t>(c) * BD + bd];
          dz[idx] = from_compute<T>(gy * y0 * s * (W(1) + zz * (W(1) - s)));
          dy0 = gy * zz * s;
        }
      }
      dD_acc += dy0 * uu;
      W du_v = dy0 * Dd;
      W ddt = W(0);
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          const W hp = active ? ws_chunk[(static_cast<int64_t>(c) * N + n) * BD + bd] : W(0);
          const W Bv = sB[c * N + n];
          const W a = exp_(dt * Ad[n]);
          const W hc = a * hp + dt * Bv * uu;
          const W vC = warp_sum(dy0 * hc);
          g[n] += sC[c * N + n] * dy0;
          const W vB = warp_sum(g[n] * dt * uu);
          if (lane == 0) {
            atomicAdd(&sdB[c * N + n], vB);
            atomicAdd(&sdC[c * N + n], vC);
          }
          du_v += g[n] * dt * Bv;
          const W gah = g[n] * a * hp;
          dA_acc[n] += gah * dt;
          ddt += gah * Ad[n] + g[n] * Bv * uu;
          g[n] *= a;
        }
      }
      if (p.delta_softplus && dt_raw <= W(20)) ddt *= sigmoid_(dt_raw);
      dbias_acc += ddt;
      if (active) {
        ddelta[idx] = from_compute<T>(ddt);
        du[idx] = from_compute<T>(du_v);
      }
    }

    __syncthreads();
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kThreads) {
      atomicAdd(&dBm[base + i], sdB[i]);
      atomicAdd(&dCm[base + i], sdC[i]);
    }
  }

  if (!active) return;
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    if (n < N) {
      if (dinit) dinit[bd * N + n] = g[n];
      atomicAdd(&dA[d * N + n], dA_acc[n]);
    }
  }
  if (dDsk) atomicAdd(&dDsk[d], dD_acc);
  if (dbias) atomicAdd(&dbias[d], dbias_acc);
}

// Call f(std::integral_constant<int, NMAX>) with the smallest NMAX in {16, 32, 64} that holds N.
template <typename F>
void dispatch_nmax(int64_t N, F&& f) {
  if (N <= 16)
    f(std::integral_constant<int, 16>{});
  else if (N <= 32)
    f(std::integral_constant<int, 32>{});
  else
    f(std::integral_constant<int, 64>{});
}

void check_params(const SelectiveScanParams& p, const char* what) {
  MT_CHECK_SHAPE(p.N >= 1 && p.N <= kSelectiveScanCudaMaxN, what, ": N must be in [1, ", kSelectiveScanCudaMaxN,
                 "], got ", p.N);
  MT_CHECK_SHAPE(p.B >= 1 && p.B <= 65535, what, ": B must be in [1, 65535], got ", p.B);
  MT_CHECK_SHAPE(p.L >= 1 && p.D >= 1, what, ": L and D must be >= 1, got L = ", p.L, ", D = ", p.D);
}

}  // namespace

void selective_scan_fwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_fwd_cuda");
  const dim3 grid(static_cast<unsigned>((p.D + kThreads - 1) / kThreads), static_cast<unsigned>(p.B));
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      scan_fwd_kernel<T, decltype(nmax)::value><<<grid, kThreads, 0, cuda::stream()>>>(p);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void selective_scan_bwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_bwd_cuda");
  const dim3 grid(static_cast<unsigned>((p.D + kThreads - 1) / kThreads), static_cast<unsigned>(p.B));
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = Device::cuda(CudaContext::get().device());
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using W = typename Compute<T>::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      constexpr int64_t CH = BwdChunk<NMAX>::value;
      const int64_t BD = p.B * p.D;
      const int64_t nch = (p.L + CH - 1) / CH;
      const int64_t n_bound = nch * p.N * BD, n_chunk = CH * p.N * BD, n_y0 = p.z ? CH * BD : 0;
      // Stream-ordered: the caching allocator may hand this memory out again once the kernel is queued.
      Tensor ws = Tensor::empty({n_bound + n_chunk + n_y0}, wdt, dev);
      W* base = static_cast<W*>(ws.data_ptr());
      scan_bwd_kernel<T, NMAX><<<grid, kThreads, 0, cuda::stream()>>>(p, base, base + n_bound,
                                                                        p.z ? base + n_bound + n_chunk : nullptr);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mt::kernels
