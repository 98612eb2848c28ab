// CUDA selective scan, forward and backward (math in kernels/selective_scan.h), parallel over the sequence.
//
// The recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(d'_t A), b_t = d'_t B_t u_t) is linear in h, so a chunk of
// timesteps [t0, t1) maps its entering state H to P H + S, where P = prod a_t = exp(A * sum_t d'_t) (one sum per
// channel, not per state) and S is the chunk's end state started from zero. The same holds backwards for
// g = dLoss/dh: a chunk maps the gradient leaving it, G, to P G + R with R = sum_t (prod_{s<=t} a_s) C_t dy0_t.
// So every kernel below parallelises over (batch, channel, chunk), and only a cheap sequential combine over the
// chunks of each (b, d, n) carries states (forward) or gradients (backward) across chunk boundaries:
//
//   scan_local_kernel     thread per (b, d, chunk), N states in registers: S, sum d' and (backward) R per chunk.
//   scan_combine_kernel   thread per (b, d, n): walks the chunks, turns S into the entering state H0 of each chunk
//                         (and writes last_state), and R into the gradient Gend leaving each chunk (and writes
//                         dinitial_state).
//   scan_fwd_kernel       thread per (b, d, chunk) from H0: y.
//   scan_bwd_kernel       thread per (b, d), a block of 64 channels walking a range of sub-chunks of SUB steps last
//                         to first from Gend: each sub-chunk's states are recomputed from H0 into shared memory,
//                         then the reverse recurrence runs over them. Nothing of size B*L*D*N touches device memory.
//
// dB_t, dC_t (sums over d) are reduced over each warp's 32 channels by a transpose-reduce (31 shuffles give every
// lane the total of one (n, dB|dC) pair), over the block's two warps with shared atomics, and over channel blocks
// with global fp32 atomics (fp64 for f64); dA, dD and dbias with one global atomic per thread and block range. The
// backward is therefore not bitwise deterministic (a deterministic variant is future work).
// The mask depends on (b, t) only, so masked steps are uniform within a block. N is a template bound NMAX in
// {16, 32, 64} with runtime `n < N` guards, so any N <= 64 works. Chunk states and gradients live in a workspace
// of 2 * B * D * N * ceil(L / SUB) + B * D * ceil(L / SUB) compute-dtype values in the backward (SUB = 8: about
// 415 MB per call at B=8, L=2048, D=1536, N=16 in fp32; the forward's chunks are longer), reused through the caching
// allocator.
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

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
// exp(x) for the recurrence's decays a = exp(d' A) (x <= 0): one multiply and the hardware exp2 (MUFU.EX2, about
// 2 ulp) instead of expf's range-reduction sequence; these are N exponentials per channel and step.
__device__ __forceinline__ float exp_decay(float x) { return exp2f(x * 1.4426950408889634f); }
__device__ __forceinline__ double exp_decay(double x) { return exp(x); }
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



constexpr int kLocalThreads = 128;  // channels per block of the per-channel kernels
constexpr int kTile = 32;           // timesteps of Bm / Cm / mask staged in shared memory at a time
constexpr int kBwdThreads = 64;     // channels per block of scan_bwd_kernel (two warps)
// scan_bwd_kernel's shared state buffer: SUB x NMAX x 64 channels. 32 KiB (SUB = 8 steps for f32, N <= 16) leaves
// room for 7 blocks per SM instead of 3 at 64 KiB: on the H200, bf16 B=8 L=2048 D=1536 N=16 forward+backward
// 6.63 -> 6.14 ms and the mamba-130m step 224 -> 213 ms; B=1 L=65536 gets slower (29.5 -> 32.4 ms: twice as many
// sub-chunks for the sequential combine to walk).
constexpr int kStateBytes = 32 * 1024;

// Backward sub-chunk: as many timesteps as fill the state buffer (f32: 8 for N <= 16, 4 for N <= 32, 2 for 64).
template <typename W, int NMAX> struct BwdSub {
  static constexpr int value = kStateBytes / (NMAX * kBwdThreads * static_cast<int>(sizeof(W)));
};

template <typename W> __device__ __forceinline__ W silu_(W x) { return x * sigmoid_(x); }

// Index of chunk-buffer entries: [(b * nch + k) * N + n] * D + d (d fastest: coalesced), and [(b * nch + k) * D + d].
__device__ __forceinline__ int64_t cidx(int64_t b, int64_t k, int64_t n, int64_t d, int64_t nch, int64_t N,
                                        int64_t D) {
  return ((b * nch + k) * N + n) * D + d;
}

// pick ? a : b through bit masks: a conditional on array elements would make the compiler select addresses and move
// the array to local memory.
__device__ __forceinline__ float select_(bool pick, float a, float b) {
  const unsigned m = 0u - static_cast<unsigned>(pick);
  return __uint_as_float((__float_as_uint(a) & m) | (__float_as_uint(b) & ~m));
}
__device__ __forceinline__ double select_(bool pick, double a, double b) {
  const unsigned long long m = 0ull - static_cast<unsigned long long>(pick);
  return __longlong_as_double(static_cast<long long>((static_cast<unsigned long long>(__double_as_longlong(a)) & m) |
                                                     (static_cast<unsigned long long>(__double_as_longlong(b)) & ~m)));
}

// One step of the transpose-reduce: lanes with bit w set keep the upper half v[w..2w), the others the lower half,
// each adding its partner's copy. w is a template argument so that every index is a compile-time constant (a
// runtime trip count would leave a rolled loop and move v to local memory).
template <int w, typename W>
__device__ __forceinline__ void transpose_step(W (&v)[32], int lane) {
  const bool hi = (lane & w) != 0;
#pragma unroll
  for (int i = 0; i < w; ++i) {
    const W lo = v[i], up = v[i + w];
    const W send = select_(hi, lo, up), keep = select_(hi, up, lo);
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, w);
  }
}

// Every lane holds v[0..31]; afterwards lane l holds the sum over the warp of v[l] (31 shuffles).
template <typename W>
__device__ __forceinline__ W transpose_reduce32(W (&v)[32], int lane) {
  transpose_step<16>(v, lane);
  transpose_step<8>(v, lane);
  transpose_step<4>(v, lane);
  transpose_step<2>(v, lane);
  transpose_step<1>(v, lane);
  return v[0];
}

// ---------------------------------------------------------------------------------------------------------------
// Per-chunk local pass. grid (nDb * nch, B), block kLocalThreads; chunk k covers [k * CL, min(L, (k + 1) * CL)).
// Writes S (end state from h = 0), sumdt (sum of d' over real steps) and, with GRAD, R (see the top).
template <typename T, int NMAX, bool GRAD>
__global__ void __launch_bounds__(kLocalThreads)
    scan_local_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, typename Compute<T>::type* Sb,
                      typename Compute<T>::type* Rb, typename Compute<T>::type* sumdt) {
  using W = typename Compute<T>::type;
  __shared__ W sB[kTile * NMAX];
  __shared__ W sC[GRAD ? kTile * NMAX : 1];
  __shared__ bool sM[kTile];

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int64_t nDb = (D + kLocalThreads - 1) / kLocalThreads;
  const int64_t k = blockIdx.x / nDb, b = blockIdx.y;
  const int64_t d = (blockIdx.x % nDb) * kLocalThreads + threadIdx.x;
  const bool active = d < D;
  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* z = static_cast<const T*>(p.z);
  const T* Bm = static_cast<const T*>(p.Bm);
  const T* Cm = static_cast<const T*>(p.Cm);
  const T* dy = static_cast<const T*>(p.dy);
  const W* A = static_cast<const W*>(p.A);
  const W* bias_p = static_cast<const W*>(p.delta_bias);

  W h[NMAX], Ad[NMAX], Pc[NMAX], Rc[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    h[n] = W(0);
    Pc[n] = W(1);
    Rc[n] = W(0);
    Ad[n] = (active && n < N) ? A[d * N + n] : W(0);
  }
  const W bias = (active && bias_p) ? bias_p[d] : W(0);
  W sdt = W(0);
  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
    const int len = static_cast<int>(t_end - t0 < kTile ? t_end - t0 : kTile);
    __syncthreads();
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kLocalThreads) {
      sB[i] = load(Bm, base + i);
      if (GRAD) sC[i] = load(Cm, base + i);
    }
    for (int i = threadIdx.x; i < len; i += kLocalThreads) sM[i] = mask_real(p.mask, p.mask_dtype, b * L + t0 + i);
    __syncthreads();
    if (!active) continue;
    for (int c = 0; c < len; ++c) {
      if (!sM[c]) continue;
      const int64_t idx = (b * L + t0 + c) * D + d;
      W dt = load(delta, idx) + bias;
      if (p.delta_softplus) dt = softplus_(dt);
      const W uu = load(u, idx);
      W dy0 = W(0);
      if (GRAD) {
        dy0 = load(dy, idx);
        if (z) dy0 *= silu_(load(z, idx));
      }
      sdt += dt;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          const W a = exp_decay(dt * Ad[n]);
          h[n] = a * h[n] + dt * sB[c * N + n] * uu;
          if (GRAD) {
            Pc[n] *= a;
            Rc[n] += Pc[n] * sC[c * N + n] * dy0;
          }
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    if (n < N) {
      Sb[cidx(b, k, n, d, nch, N, D)] = h[n];
      if (GRAD) Rb[cidx(b, k, n, d, nch, N, D)] = Rc[n];
    }
  }
  sumdt[(b * nch + k) * D + d] = sdt;
}

// Sequential combine over chunks, thread per (b, n, d). grid (ceil(D / 128), N, B), block 128.
//   Sb (optional): S -> H0 (state entering each chunk), from initial_state; writes last (optional).
//   Rb (optional): R -> Gend (gradient leaving each chunk), from dlast_state; writes dinit (optional).
template <typename W>
__global__ void scan_combine_kernel(SelectiveScanParams p, int64_t nch, W* Sb, W* Rb, const W* sumdt, W* last,
                                    W* dinit) {
  const int64_t D = p.D, N = p.N;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y, b = blockIdx.z;
  if (d >= D) return;
  const W Adn = static_cast<const W*>(p.A)[d * N + n];
  const int64_t sn = (b * D + d) * N + n;
  if (Sb) {
    const W* init = static_cast<const W*>(p.initial_state);
    W H = init ? init[sn] : W(0);
#pragma unroll 4
    for (int64_t k = 0; k < nch; ++k) {
      const int64_t i = cidx(b, k, n, d, nch, N, D);
      const W s = Sb[i];
      const W P = exp_decay(Adn * sumdt[(b * nch + k) * D + d]);
      Sb[i] = H;
      H = P * H + s;
    }
    if (last) last[sn] = H;
  }
  if (Rb) {
    const W* dlast = static_cast<const W*>(p.dlast_state);
    W G = dlast ? dlast[sn] : W(0);
#pragma unroll 4
    for (int64_t k = nch - 1; k >= 0; --k) {
      const int64_t i = cidx(b, k, n, d, nch, N, D);
      const W r = Rb[i];
      const W P = exp_decay(Adn * sumdt[(b * nch + k) * D + d]);
      Rb[i] = G;
      G = P * G + r;
    }
    if (dinit) dinit[sn] = G;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward. grid (nDb * nch, B), block kLocalThreads; chunk k of CL timesteps starts from H0 (or, with a single
// chunk, from initial_state, and then writes last_state itself).
template <typename T, int NMAX>
__global__ void __launch_bounds__(kLocalThreads)
    scan_fwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* H0) {
  using W = typename Compute<T>::type;
  __shared__ W sB[kTile * NMAX];
  __shared__ W sC[kTile * NMAX];
  __shared__ bool sM[kTile];

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int64_t nDb = (D + kLocalThreads - 1) / kLocalThreads;
  const int64_t k = blockIdx.x / nDb, b = blockIdx.y;
  const int64_t d = (blockIdx.x % nDb) * kLocalThreads + threadIdx.x;
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
      if (H0) h[n] = H0[cidx(b, k, n, d, nch, N, D)];
      else if (init) h[n] = init[(b * D + d) * N + n];
    }
  }
  const W Dd = (active && Dsk) ? Dsk[d] : W(0);
  const W bias = (active && bias_p) ? bias_p[d] : W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
    const int len = static_cast<int>(t_end - t0 < kTile ? t_end - t0 : kTile);
    __syncthreads();  // the previous tile's readers are done with sB / sC / sM
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kLocalThreads) {
      sB[i] = load(Bm, base + i);
      sC[i] = load(Cm, base + i);
    }
    for (int i = threadIdx.x; i < len; i += kLocalThreads) sM[i] = mask_real(p.mask, p.mask_dtype, b * L + t0 + i);
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
          h[n] = exp_decay(dt * Ad[n]) * h[n] + dt * sB[c * N + n] * uu;
          acc += sC[c * N + n] * h[n];
        }
      }
      W yv = acc + Dd * uu;
      if (z) yv *= silu_(load(z, idx));
      y[idx] = from_compute<T>(yv);
    }
  }
  if (active && H0 == nullptr) {
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) last[(b * D + d) * N + n] = h[n];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward. grid (nDb * nranges, B) with nDb = ceil(D / 64), block kBwdThreads. Block range r walks sub-chunks
// k = min(nch, (r + 1) * R) - 1 down to r * R (SUB timesteps each) with g carried across them.
// Dynamic shared memory: sH [SUB][NMAX][64] (h_{t-1} of each step), sY0 [SUB][64] (y0, used with z).
template <typename T, int NMAX>
__global__ void __launch_bounds__(kBwdThreads)
    scan_bwd_kernel(SelectiveScanParams p, int64_t nch, int64_t R, const typename Compute<T>::type* H0,
                    const typename Compute<T>::type* Gend) {
  using W = typename Compute<T>::type;
  constexpr int SUB = BwdSub<W, NMAX>::value;
  constexpr int KV = NMAX < 16 ? 32 : 2 * NMAX;  // reduced values per step: dB | dC, padded to whole warps
  extern __shared__ __align__(16) unsigned char smem_raw[];
  W* sH = reinterpret_cast<W*>(smem_raw);
  W* sY0 = sH + SUB * NMAX * kBwdThreads;
  __shared__ W sB[SUB * NMAX];
  __shared__ W sC[SUB * NMAX];
  __shared__ W sdB[SUB * NMAX];
  __shared__ W sdC[SUB * NMAX];
  __shared__ bool sM[SUB];

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int64_t nDb = (D + kBwdThreads - 1) / kBwdThreads;
  const int64_t r = blockIdx.x / nDb, b = blockIdx.y;
  const int ch = threadIdx.x;
  const int64_t d = (blockIdx.x % nDb) * kBwdThreads + ch;
  const bool active = d < D;
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
  T* du = static_cast<T*>(p.du);
  T* ddelta = static_cast<T*>(p.ddelta);
  T* dz = static_cast<T*>(p.dz);
  W* dA = static_cast<W*>(p.dA);
  W* dBm = static_cast<W*>(p.dBm);
  W* dCm = static_cast<W*>(p.dCm);
  W* dDsk = static_cast<W*>(p.dD_skip);
  W* dbias = static_cast<W*>(p.ddelta_bias);

  const int64_t k_first = r * R;
  const int64_t k_last = (nch < (r + 1) * R ? nch : (r + 1) * R) - 1;
  W Ad[NMAX], g[NMAX], dA_acc[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    const bool on = active && n < N;
    Ad[n] = on ? A[d * N + n] : W(0);
    g[n] = on ? Gend[cidx(b, k_last, n, d, nch, N, D)] : W(0);
    dA_acc[n] = W(0);
  }
  const W Dd = (active && Dsk) ? Dsk[d] : W(0);
  const W bias = (active && bias_p) ? bias_p[d] : W(0);
  W dD_acc = W(0), dbias_acc = W(0);

  for (int64_t k = k_last; k >= k_first; --k) {
    const int64_t t0 = k * SUB;
    const int len = static_cast<int>(L - t0 < SUB ? L - t0 : SUB);
    __syncthreads();  // the previous sub-chunk's flush of sdB / sdC is done
    const int64_t base = (b * L + t0) * N;
    for (int i = threadIdx.x; i < len * N; i += kBwdThreads) {
      sB[i] = load(Bm, base + i);
      sC[i] = load(Cm, base + i);
      sdB[i] = W(0);
      sdC[i] = W(0);
    }
    for (int i = threadIdx.x; i < len; i += kBwdThreads) sM[i] = mask_real(p.mask, p.mask_dtype, b * L + t0 + i);
    __syncthreads();

    // Recompute the sub-chunk's states from H0: sH[c] = h_{t0+c-1}; sY0[c] = y0_{t0+c}.
#pragma unroll
    for (int n = 0; n < NMAX; ++n) h[n] = (active && n < N) ? H0[cidx(b, k, n, d, nch, N, D)] : W(0);
    for (int c = 0; c < len; ++c) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) sH[(c * NMAX + n) * kBwdThreads + ch] = h[n];
      if (!sM[c] || !active) continue;
      const int64_t idx = (b * L + t0 + c) * D + d;
      W dt = load(delta, idx) + bias;
      if (p.delta_softplus) dt = softplus_(dt);
      const W uu = load(u, idx);
      W acc = W(0);
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          h[n] = exp_decay(dt * Ad[n]) * h[n] + dt * sB[c * N + n] * uu;
          acc += sC[c * N + n] * h[n];
        }
      }
      if (z) sY0[c * kBwdThreads + ch] = acc + Dd * uu;
    }

    // Reverse recurrence over the sub-chunk; g = dLoss/dh_t.
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
          dz[idx] = from_compute<T>(gy * sY0[c * kBwdThreads + ch] * s * (W(1) + zz * (W(1) - s)));
          dy0 = gy * zz * s;
        }
      }
      dD_acc += dy0 * uu;
      W du_v = dy0 * Dd;
      W ddt = W(0);
      W v[KV / 32][32];  // value i = dB_t[i] part for i < KV/2, dC_t[i - KV/2] part above, of this channel
#pragma unroll
      for (int i = 0; i < KV; ++i) v[i / 32][i % 32] = W(0);
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          const W hp = sH[(c * NMAX + n) * kBwdThreads + ch];
          const W Bv = sB[c * N + n];
          const W a = exp_decay(dt * Ad[n]);
          v[(KV / 2 + n) / 32][(KV / 2 + n) % 32] = dy0 * (a * hp + dt * Bv * uu);
          g[n] += sC[c * N + n] * dy0;
          v[n / 32][n % 32] = g[n] * dt * uu;
          du_v += g[n] * dt * Bv;
          const W gah = g[n] * a * hp;
          dA_acc[n] += gah * dt;
          ddt += gah * Ad[n] + g[n] * Bv * uu;
          g[n] *= a;
        }
      }
#pragma unroll
      for (int q = 0; q < KV / 32; ++q) {
        const W tot = transpose_reduce32(v[q], lane);
        const int i = 32 * q + lane;  // the value this lane now holds the warp's total of
        if (i < KV / 2) {
          if (i < N) atomicAdd(&sdB[c * N + i], tot);
        } else if (i - KV / 2 < N) {
          atomicAdd(&sdC[c * N + i - KV / 2], tot);
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
    for (int i = threadIdx.x; i < len * N; i += kBwdThreads) {
      atomicAdd(&dBm[base + i], sdB[i]);
      atomicAdd(&dCm[base + i], sdC[i]);
    }
  }

  if (!active) return;
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < N) atomicAdd(&dA[d * N + n], dA_acc[n]);
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


// Chunk length of the forward: enough (b, d, chunk) threads to fill the GPU (about 2^17), at least one tile.
int64_t fwd_chunk_len(const SelectiveScanParams& p) {
  const int64_t want = std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, p.B * p.D));
  int64_t nch = std::min<int64_t>(want, (p.L + 63) / 64);
  nch = std::max<int64_t>(nch, 1);
  int64_t CL = (p.L + nch - 1) / nch;
  return (CL + kTile - 1) / kTile * kTile;
}

template <typename W>
void launch_combine(const SelectiveScanParams& p, int64_t nch, W* Sb, W* Rb, const W* sumdt, W* last, W* dinit) {
  const dim3 grid(static_cast<unsigned>((p.D + 127) / 128), static_cast<unsigned>(p.N), static_cast<unsigned>(p.B));
  scan_combine_kernel<W><<<grid, 128, 0, cuda::stream()>>>(p, nch, Sb, Rb, sumdt, last, dinit);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void selective_scan_fwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_fwd_cuda");
  const int64_t CL = fwd_chunk_len(p);
  const int64_t nch = (p.L + CL - 1) / CL;
  const int64_t nDb = (p.D + kLocalThreads - 1) / kLocalThreads;
  const dim3 grid(static_cast<unsigned>(nDb * nch), static_cast<unsigned>(p.B));
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = Device::cuda(CudaContext::get().device());
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using W = typename Compute<T>::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      if (nch == 1) {
        scan_fwd_kernel<T, NMAX><<<grid, kLocalThreads, 0, cuda::stream()>>>(p, CL, 1, nullptr);
        MT_CUDA_CHECK_LAUNCH();
        return;
      }
      const int64_t nS = p.B * nch * p.N * p.D;
      Tensor ws = Tensor::empty({nS + p.B * nch * p.D}, wdt, dev);  // stream-ordered reuse via the allocator
      W* Sb = static_cast<W*>(ws.data_ptr());
      W* sumdt = Sb + nS;
      scan_local_kernel<T, NMAX, false><<<grid, kLocalThreads, 0, cuda::stream()>>>(p, CL, nch, Sb, nullptr, sumdt);
      MT_CUDA_CHECK_LAUNCH();
      launch_combine<W>(p, nch, Sb, nullptr, sumdt, static_cast<W*>(p.last_state), nullptr);
      scan_fwd_kernel<T, NMAX><<<grid, kLocalThreads, 0, cuda::stream()>>>(p, CL, nch, Sb);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void selective_scan_bwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_bwd_cuda");
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = Device::cuda(CudaContext::get().device());
  const int sms = CudaContext::get().sm_count();
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using W = typename Compute<T>::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      constexpr int SUB = BwdSub<W, NMAX>::value;
      const int64_t nch = (p.L + SUB - 1) / SUB;
      const int64_t nS = p.B * nch * p.N * p.D;
      Tensor ws = Tensor::empty({2 * nS + p.B * nch * p.D}, wdt, dev);
      W* Sb = static_cast<W*>(ws.data_ptr());
      W* Rb = Sb + nS;
      W* sumdt = Rb + nS;
      const int64_t nDl = (p.D + kLocalThreads - 1) / kLocalThreads;
      scan_local_kernel<T, NMAX, true>
          <<<dim3(static_cast<unsigned>(nDl * nch), static_cast<unsigned>(p.B)), kLocalThreads, 0, cuda::stream()>>>(
              p, SUB, nch, Sb, Rb, sumdt);
      MT_CUDA_CHECK_LAUNCH();
      launch_combine<W>(p, nch, Sb, Rb, sumdt, nullptr, static_cast<W*>(p.dinitial_state));
      // Ranges of R sub-chunks per block: about 12 blocks per multiprocessor in all, fewer atomics for dA / dD.
      const int64_t nDb = (p.D + kBwdThreads - 1) / kBwdThreads;
      const int64_t R = std::max<int64_t>(1, nch * nDb * p.B / (static_cast<int64_t>(sms) * 12));
      const int64_t nranges = (nch + R - 1) / R;
      const size_t smem = sizeof(W) * (static_cast<size_t>(SUB) * NMAX * kBwdThreads + SUB * kBwdThreads);
      static bool attr_set = false;  // one per template instantiation
      if (!attr_set) {
        MT_CUDA_CHECK(cudaFuncSetAttribute(scan_bwd_kernel<T, NMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
        attr_set = true;
      }
      scan_bwd_kernel<T, NMAX>
          <<<dim3(static_cast<unsigned>(nDb * nranges), static_cast<unsigned>(p.B)), kBwdThreads, smem,
             cuda::stream()>>>(p, nch, R, Sb, Rb);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mt::kernels
