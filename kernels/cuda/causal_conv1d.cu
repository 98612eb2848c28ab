// CUDA depthwise causal conv1d (math in kernels/causal_conv1d.h).
//
// Mamba's width (K = 4) takes the streaming kernels below (a thread per channel or channel pair and run of steps);
// other widths, or buffers the streaming kernels' vector loads cannot serve, take the general kernels:
// Forward: one thread per (b, t, d), D fastest, so a warp reads 32 consecutive channels of one time step
// (coalesced); the K taps of a channel come from L1/L2.
// Backward: one fused kernel over tiles of kTileL time steps x kTileD channels of one sequence. The block stages the
// tile's padded input rows in shared memory, recomputes pre and g_pre = dy * silu'(pre) for the tile plus a halo of
// K-1 steps, writes dx (and d_initial_state for the first tile), and reduces g_pre * xx into per-block partial
// dweight / dbias sums. A second small kernel adds the partials of all blocks in a fixed order: deterministic,
// no atomics.
// Document resets (p.reset): each output counts only the taps its document reaches (visible_lags, as the CPU
// kernel); the backward stages that count for the tile's rows and masks the same taps in dx, d_initial_state and
// dweight. Without resets every tap counts and the arithmetic is that of the plain kernels.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <initializer_list>

#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/causal_conv1d.h"
#include "kernels/detail/time_map.h"

namespace mt::kernels {

namespace {

using cuda::Compute;
using cuda::load;

constexpr int kTileD = 32;                // channels per block (one warp row)
constexpr int kRowsY = 8;                 // warps per block
constexpr int kTileL = 64;                // time steps per tile
constexpr int kMaxBlocksPerColumn = 512;  // caps the partial-sum workspace; blocks loop over tiles beyond it

template <typename C>
__device__ __forceinline__ C sigmoid_c(C v) {
  return C(1) / (C(1) + exp(-v));
}

// The largest lag output t of row b sees: K-1 without a document start in [t-(K-2), t], else the lag of the nearest
// one (kernels/causal_conv1d.h). Tap k has lag K-1-k.
__device__ __forceinline__ int64_t visible_lags(const TimeMap& tm, int64_t b, int64_t t, int64_t K) {
  if (tm.reset == nullptr) return K - 1;
  for (int64_t j = 0; j < K - 1 && t - j >= 0; ++j)
    if (tm.starts(b, t - j)) return j;
  return K - 1;
}

// xx[b, s, d]: initial_state rows for s < K-1 (zeros when absent), x rows after (s in the conv's time).
template <typename Tx>
__device__ __forceinline__ typename Compute<Tx>::type padded(const Tx* x, const Tx* init, const TimeMap& tm, int64_t b,
                                                             int64_t s, int64_t d, int64_t D, int64_t K) {
  using C = typename Compute<Tx>::type;
  if (s >= K - 1) return load(x, tm.row(b, s - (K - 1)) * D + d);
  return init ? load(init, (b * (K - 1) + s) * D + d) : C(0);
}

template <typename Tx, typename Tw>
__global__ void conv_fwd_kernel(const Tx* __restrict__ x, const Tw* __restrict__ w, const Tw* __restrict__ bias,
                                const Tx* __restrict__ init, TimeMap tm, Tx* __restrict__ y,
                                Tx* __restrict__ final_state, int64_t B, int64_t D, int64_t K, bool silu) {
  using C = typename Compute<Tx>::type;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t L = tm.L, n = B * L * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t d = i % D, bt = i / D, t = bt % L, b = bt / L;  // t in the conv's time
    C acc = bias ? static_cast<C>(load(bias, d)) : C(0);
    const int64_t k_lo = K - 1 - visible_lags(tm, b, t, K);  // earlier taps see another document
    for (int64_t k = k_lo; k < K; ++k)
      acc += static_cast<C>(load(w, d * K + k)) * padded(x, init, tm, b, t + k, d, D, K);
    if (silu) acc = acc * sigmoid_c(acc);
    y[tm.row(b, t) * D + d] = cuda::from_compute<Tx>(acc);
  }
  if (!final_state) return;
  const int64_t nf = B * (K - 1) * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nf; i += stride) {
    const int64_t d = i % D, bj = i / D, j = bj % (K - 1), b = bj / (K - 1);
    // Row j (time L-(K-1)+j) stays visible to the next chunk unless a document starts after it.
    const bool seen = K - 2 - j <= visible_lags(tm, b, L - 1, K);
    final_state[i] = cuda::from_compute<Tx>(seen ? padded(x, init, tm, b, L + j, d, D, K) : C(0));
  }
}

// Shared-memory layout of the backward kernel, in elements of C.
struct BwdSmem {
  int64_t xs, gs, red, acc, span, total;
  __host__ __device__ explicit BwdSmem(int64_t K) {
    xs = 0;                                     // [kTileL + 2(K-1)][kTileD] padded inputs
    gs = xs + (kTileL + 2 * (K - 1)) * kTileD;  // [kTileL + K-1][kTileD] g_pre
    red = gs + (kTileL + K - 1) * kTileD;       // [kRowsY][kTileD] reduction scratch
    acc = red + kRowsY * kTileD;                // [K+1][kTileD] this block's running dweight (k < K) / dbias (k = K)
    span = acc + (K + 1) * kTileD;              // [kTileL + K-1] visible lags of the tile's outputs (int, resets only)
    total = span + kTileL + K - 1;
  }
};

// grid: x = blocks over (b, time tile) pairs (each loops over several when capped), y = channel tiles.
// partial: [gridDim.x][K+1][D] in C.
template <typename Tx, typename Tw, bool kReset>
__global__ void conv_bwd_kernel(const Tx* __restrict__ x, const Tw* __restrict__ w, const Tw* __restrict__ bias,
                                const Tx* __restrict__ init, TimeMap tm, const Tx* __restrict__ dy,
                                const Tx* __restrict__ d_final, Tx* __restrict__ dx, Tx* __restrict__ dinit,
                                typename Compute<Tx>::type* __restrict__ partial, int64_t B, int64_t D, int64_t K,
                                bool silu) {
  using C = typename Compute<Tx>::type;
  const int64_t L = tm.L;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* smem = reinterpret_cast<C*>(smem_raw);
  const BwdSmem lay(K);
  C* xs = smem + lay.xs;
  C* gs = smem + lay.gs;
  C* red = smem + lay.red;
  C* acc = smem + lay.acc;
  int* span = reinterpret_cast<int*>(smem + lay.span);  // span[i]: visible lags of output t0 + i

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * kTileD + tx;
  const bool dvalid = d < D;
  const int64_t tiles_per_seq = (L + kTileL - 1) / kTileL;
  const int64_t ntiles = B * tiles_per_seq;
  const int64_t R = kTileL + 2 * (K - 1);
  const int64_t G = kTileL + K - 1;

  for (int64_t k = ty; k <= K; k += kRowsY) acc[k * kTileD + tx] = C(0);
  const C bias_d = (bias && dvalid) ? static_cast<C>(load(bias, d)) : C(0);
  // Tap k of output row i counts (the visible-lag test passes, always without resets).
  auto counts = [&](int64_t i, int64_t k) { return !kReset || K - 1 - k <= span[i]; };

  for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int64_t b = tile / tiles_per_seq;
    const int64_t t0 = (tile % tiles_per_seq) * kTileL;
    __syncthreads();  // previous tile's readers of xs / gs are done
    // 1. padded inputs xx[t0 .. t0 + R); with resets, the visible lags of outputs t0 .. t0 + G
    for (int64_t r = ty; r < R; r += kRowsY) {
      const int64_t s = t0 + r;
      xs[r * kTileD + tx] = (dvalid && s < L + K - 1) ? padded(x, init, tm, b, s, d, D, K) : C(0);
    }
    if (kReset)
      for (int64_t i = ty * kTileD + tx; i < G; i += kRowsY * kTileD)
        span[i] = t0 + i < L ? static_cast<int>(visible_lags(tm, b, t0 + i, K)) : 0;
    __syncthreads();
    // 2. g_pre for t' = t0 + i, i < G (zero past the end of the sequence)
    for (int64_t i = ty; i < G; i += kRowsY) {
      const int64_t t = t0 + i;
      C g = C(0);
      if (dvalid && t < L) {
        g = load(dy, tm.row(b, t) * D + d);
        if (silu) {
          C pre = bias_d;
          for (int64_t k = 0; k < K; ++k)
            if (counts(i, k)) pre += static_cast<C>(load(w, d * K + k)) * xs[(i + k) * kTileD + tx];
          const C sg = sigmoid_c(pre);
          g *= sg * (C(1) + pre * (C(1) - sg));
        }
      }
      gs[i * kTileD + tx] = g;
    }
    __syncthreads();
    // 3. dx[t] = dxx[t + K-1] for t in the tile; the first tile also writes d_initial_state (dxx[0 .. K-1)).
    // final_state row s - L passes its gradient back unless a document starts after it.
    if (dvalid) {
      const int64_t last_seen = kReset ? visible_lags(tm, b, L - 1, K) : K - 1;
      auto to_final = [&](int64_t s) { return d_final && s >= L && K - 2 - (s - L) <= last_seen; };
      for (int64_t i = ty; i < kTileL && t0 + i < L; i += kRowsY) {
        const int64_t s = t0 + i + K - 1;
        C v = to_final(s) ? static_cast<C>(load(d_final, (b * (K - 1) + (s - L)) * D + d)) : C(0);
        for (int64_t k = 0; k < K; ++k)
          if (counts(i + K - 1 - k, k)) v += static_cast<C>(load(w, d * K + k)) * gs[(i + K - 1 - k) * kTileD + tx];
        if (dx) dx[tm.row(b, t0 + i) * D + d] = cuda::from_compute<Tx>(v);
      }
      if (t0 == 0 && dinit) {
        for (int64_t s = ty; s < K - 1; s += kRowsY) {
          C v = to_final(s) ? static_cast<C>(load(d_final, (b * (K - 1) + (s - L)) * D + d)) : C(0);
          for (int64_t k = 0; k <= s; ++k)
            if (counts(s - k, k)) v += static_cast<C>(load(w, d * K + k)) * gs[(s - k) * kTileD + tx];
          dinit[(b * (K - 1) + s) * D + d] = cuda::from_compute<Tx>(v);
        }
      }
    }
    // 4. this tile's dweight[d, k] = sum_i g[i] xx[i + k] (k < K) and dbias = sum_i g[i] (k = K), own rows only.
    if (partial) {
      for (int64_t k = 0; k <= K; ++k) {
        C s = C(0);
        for (int64_t i = ty; i < kTileL; i += kRowsY)
          if (k == K || counts(i, k)) s += gs[i * kTileD + tx] * (k < K ? xs[(i + k) * kTileD + tx] : C(1));
        red[ty * kTileD + tx] = s;
        __syncthreads();
        if (ty == 0) {
          C tot = C(0);
          for (int r = 0; r < kRowsY; ++r) tot += red[r * kTileD + tx];
          acc[k * kTileD + tx] += tot;
        }
        __syncthreads();
      }
    }
  }
  __syncthreads();  // (uniform) the last acc update is visible to every thread
  if (partial && dvalid) {
    for (int64_t k = ty; k <= K; k += kRowsY)
      partial[(static_cast<int64_t>(blockIdx.x) * (K + 1) + k) * D + d] = acc[k * kTileD + tx];
  }
}

// dweight[d, k] / dbias[d] = sum over blocks of partial[blk][k][d], in block order.
template <typename C, typename Tw>
__global__ void conv_reduce_kernel(const C* __restrict__ partial, int64_t nblk, Tw* __restrict__ dw,
                                   Tw* __restrict__ db, int64_t D, int64_t K) {
  const int64_t n = (K + 1) * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / D, d = i % D;
    C s = C(0);
    for (int64_t blk = 0; blk < nblk; ++blk) s += partial[blk * n + i];
    using Cw = typename Compute<Tw>::type;
    if (k < K) {
      if (dw) dw[d * K + k] = cuda::from_compute<Tw>(static_cast<Cw>(s));
    } else if (db) {
      db[d] = cuda::from_compute<Tw>(static_cast<Cw>(s));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming kernels for K = kStreamK (Mamba's d_conv) and V-aligned channels. A thread owns V adjacent channels
// (V = 2 for 16-bit storage: one 4-byte load per row, 1 otherwise) and walks runs of kStreamT time steps holding the
// previous K-1 inputs in registers, so each input is read about once instead of K times; a document start clears
// that window (its taps then add zeros). Per output, the arithmetic and its order are those of conv_fwd_kernel.
// The backward walks the same way K-1 steps further: for each output it recomputes g_pre (as conv_bwd_kernel does),
// and once the K outputs that read an input are known it writes that input's dx (d_initial_state before t = 0), in
// conv_bwd_kernel's order; it sums dweight / dbias over its own runs into one partial row per (run column, sequence),
// and conv_reduce_kernel adds the rows in a fixed order (deterministic; the order differs from conv_bwd_kernel's).
constexpr int kStreamK = 4;
constexpr int kStreamT = 32;             // time steps per run
constexpr int kStreamBlock = 128;        // threads per block, along channels
constexpr int64_t kStreamMaxRows = 512;  // partial rows of the backward (run columns x sequences), when B allows

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T, typename C>
__device__ __forceinline__ void load_pack(const T* p, int64_t i, C (&out)[V]) {
  const Pack<T, V> q = *reinterpret_cast<const Pack<T, V>*>(p + i);
#pragma unroll
  for (int v = 0; v < V; ++v) out[v] = load(q.v, v);
}

template <int V, typename T, typename C>
__device__ __forceinline__ void store_pack(T* p, int64_t i, const C (&in)[V]) {
  Pack<T, V> q;
#pragma unroll
  for (int v = 0; v < V; ++v) q.v[v] = cuda::from_compute<T>(in[v]);
  *reinterpret_cast<Pack<T, V>*>(p + i) = q;
}

// The K-1 inputs before t0 (initial_state rows before time 0, zeros without one), with the taps that a document
// start in (t0 - (K-1), t0) hides cleared: win[v][j] is time t0 - (K-1) + j.
template <int K, int V, bool kReset, typename Tx, typename C>
__device__ __forceinline__ void stream_window(const Tx* x, const Tx* init, const TimeMap& tm, int64_t b, int64_t t0,
                                              int64_t D, int64_t d0, C (&win)[V][K - 1]) {
#pragma unroll
  for (int j = 0; j < K - 1; ++j) {
    const int64_t s = t0 - (K - 1) + j;
    C v[V];
    if (s >= 0) {
      load_pack<V>(x, tm.row(b, s) * D + d0, v);
    } else if (init != nullptr) {
      load_pack<V>(init, (b * (K - 1) + s + K - 1) * D + d0, v);
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q) v[q] = C(0);
    }
#pragma unroll
    for (int q = 0; q < V; ++q) win[q][j] = v[q];
  }
  if (kReset) {
#pragma unroll
    for (int j = 1; j < K - 1; ++j) {
      const int64_t s = t0 - (K - 1) + j;
      if (s >= 0 && tm.starts(b, s)) {
#pragma unroll
        for (int q = 0; q < V; ++q)
#pragma unroll
          for (int i = 0; i < j; ++i) win[q][i] = C(0);
      }
    }
  }
}

// The thread's taps and bias: wr[q][k] = weight[d0 + q, k], br[q] = bias[d0 + q] (0 without one).
template <int K, int V, typename Tw, typename C>
__device__ __forceinline__ void stream_weights(const Tw* w, const Tw* bias, int64_t d0, C (&wr)[V][K], C (&br)[V]) {
#pragma unroll
  for (int q = 0; q < V; ++q) {
#pragma unroll
    for (int k = 0; k < K; ++k) wr[q][k] = static_cast<C>(load(w, (d0 + q) * K + k));
    br[q] = bias ? static_cast<C>(load(bias, d0 + q)) : C(0);
  }
}

// A document starts at this step: the inputs before it leave the window.
template <int K, typename C>
__device__ __forceinline__ void stream_clear(C (&win)[K - 1]) {
#pragma unroll
  for (int j = 0; j < K - 1; ++j) win[j] = C(0);
}

// One channel's output before the SiLU at the step of input x, in conv_fwd_kernel's order (bias, then oldest tap
// first).
template <int K, typename C>
__device__ __forceinline__ C stream_pre(const C (&w)[K], C bias, const C (&win)[K - 1], C x) {
  C acc = bias;
#pragma unroll
  for (int k = 0; k < K - 1; ++k) acc += w[k] * win[k];
  return acc + w[K - 1] * x;
}

// The window moves one step: x becomes its newest input.
template <int K, typename C>
__device__ __forceinline__ void stream_shift(C (&win)[K - 1], C x) {
#pragma unroll
  for (int j = 0; j + 1 < K - 1; ++j) win[j] = win[j + 1];
  win[K - 2] = x;
}

// grid (ceil(D / (kStreamBlock V)), run columns, B); each thread takes runs blockIdx.y, + gridDim.y, ...
template <typename Tx, typename Tw, int K, int V, bool kReset>
__global__ void __launch_bounds__(kStreamBlock)
    conv_fwd_stream_kernel(const Tx* __restrict__ x, const Tw* __restrict__ w, const Tw* __restrict__ bias,
                           const Tx* __restrict__ init, TimeMap tm, Tx* __restrict__ y, Tx* __restrict__ final_state,
                           int64_t D, bool silu) {
  using C = typename Compute<Tx>::type;
  const int64_t L = tm.L;
  const int64_t d0 = (static_cast<int64_t>(blockIdx.x) * kStreamBlock + threadIdx.x) * V, b = blockIdx.z;
  if (d0 >= D) return;
  C wr[V][K], br[V];
  stream_weights<K, V>(w, bias, d0, wr, br);
  const int64_t runs = (L + kStreamT - 1) / kStreamT;
  for (int64_t run = blockIdx.y; run < runs; run += gridDim.y) {
    const int64_t t0 = run * kStreamT, t1 = t0 + kStreamT < L ? t0 + kStreamT : L;
    C win[V][K - 1];
    stream_window<K, V, kReset>(x, init, tm, b, t0, D, d0, win);
#pragma unroll 4
    for (int64_t t = t0; t < t1; ++t) {
      C xv[V], out[V];
      const int64_t row = tm.row(b, t);
      load_pack<V>(x, row * D + d0, xv);
      const bool start = kReset && tm.starts(b, t);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        if (start) stream_clear<K>(win[q]);
        const C acc = stream_pre<K>(wr[q], br[q], win[q], xv[q]);
        out[q] = silu ? acc * sigmoid_c(acc) : acc;
        stream_shift<K>(win[q], xv[q]);
      }
      store_pack<V>(y, row * D + d0, out);
    }
    if (final_state != nullptr && t1 == L) {
#pragma unroll
      for (int j = 0; j < K - 1; ++j) {
        C v[V];
#pragma unroll
        for (int q = 0; q < V; ++q) v[q] = win[q][j];
        store_pack<V>(final_state, (b * (K - 1) + j) * D + d0, v);
      }
    }
  }
}

// partial: [gridDim.y * B][K+1][D] (row blockIdx.y * B + b) when dweight or dbias is wanted.
template <typename Tx, typename Tw, int K, int V, bool kReset>
__global__ void __launch_bounds__(kStreamBlock)
    conv_bwd_stream_kernel(const Tx* __restrict__ x, const Tw* __restrict__ w, const Tw* __restrict__ bias,
                           const Tx* __restrict__ init, TimeMap tm, const Tx* __restrict__ dy,
                           const Tx* __restrict__ d_final, Tx* __restrict__ dx, Tx* __restrict__ dinit,
                           typename Compute<Tx>::type* __restrict__ partial, int64_t B, int64_t D, bool silu) {
  using C = typename Compute<Tx>::type;
  const int64_t L = tm.L;
  const int64_t d0 = (static_cast<int64_t>(blockIdx.x) * kStreamBlock + threadIdx.x) * V, b = blockIdx.z;
  if (d0 >= D) return;
  C wr[V][K], br[V], aw[V][K + 1];
  stream_weights<K, V>(w, bias, d0, wr, br);
#pragma unroll
  for (int q = 0; q < V; ++q)
#pragma unroll
    for (int k = 0; k <= K; ++k) aw[q][k] = C(0);
  // final_state row j (time L - (K-1) + j) passes its gradient back unless a document starts after it.
  const int64_t last_seen = kReset ? visible_lags(tm, b, L - 1, K) : K - 1;
  const int64_t runs = (L + kStreamT - 1) / kStreamT;
  for (int64_t run = blockIdx.y; run < runs; run += gridDim.y) {
    const int64_t t0 = run * kStreamT, t1 = t0 + kStreamT < L ? t0 + kStreamT : L;
    C win[V][K - 1];
    stream_window<K, V, kReset>(x, init, tm, b, t0, D, d0, win);
    C g[V][K];  // g[q][j]: g_pre of output t - (K-1) + j (0 before t0 and from L on)
    int sp[K];  // visible lags of those outputs
#pragma unroll
    for (int j = 0; j < K; ++j) {
      sp[j] = K - 1;
#pragma unroll
      for (int q = 0; q < V; ++q) g[q][j] = C(0);
    }
#pragma unroll 4
    for (int64_t t = t0; t < t1 + K - 1; ++t) {
      C gt[V];
      int st = K - 1;
      if (t < L) {
        C xv[V], dyv[V];
        const int64_t row = tm.row(b, t);
        load_pack<V>(x, row * D + d0, xv);
        load_pack<V>(dy, row * D + d0, dyv);
        const bool start = kReset && tm.starts(b, t);
        if (kReset) st = static_cast<int>(visible_lags(tm, b, t, K));
#pragma unroll
        for (int q = 0; q < V; ++q) {
          if (start) stream_clear<K>(win[q]);
          C gv = dyv[q];
          if (silu) {
            const C pre = stream_pre<K>(wr[q], br[q], win[q], xv[q]);
            const C sg = sigmoid_c(pre);
            gv *= sg * (C(1) + pre * (C(1) - sg));
          }
          gt[q] = gv;
          if (t < t1) {
#pragma unroll
            for (int k = 0; k < K - 1; ++k) aw[q][k] += gv * win[q][k];
            aw[q][K - 1] += gv * xv[q];
            aw[q][K] += gv;
          }
          stream_shift<K>(win[q], xv[q]);
        }
      } else {
#pragma unroll
        for (int q = 0; q < V; ++q) gt[q] = C(0);
      }
#pragma unroll
      for (int j = 0; j + 1 < K; ++j) {
        sp[j] = sp[j + 1];
#pragma unroll
        for (int q = 0; q < V; ++q) g[q][j] = g[q][j + 1];
      }
      sp[K - 1] = st;
#pragma unroll
      for (int q = 0; q < V; ++q) g[q][K - 1] = gt[q];
      // Input tau = t - (K-1) is read by outputs tau .. t, all known now: g[.][j] is output tau + j, tap K-1-j.
      const int64_t tau = t - (K - 1);
      if (tau < t0 && !(t0 == 0 && tau < 0)) continue;
      const int64_t j_fin = tau - (L - (K - 1));  // its final_state row, when >= 0
      const bool to_final = d_final != nullptr && j_fin >= 0 && K - 2 - j_fin <= last_seen;
      C v[V];
      if (to_final) {
        load_pack<V>(d_final, (b * (K - 1) + j_fin) * D + d0, v);
      } else {
#pragma unroll
        for (int q = 0; q < V; ++q) v[q] = C(0);
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (kReset && K - 1 - k > sp[K - 1 - k]) continue;
#pragma unroll
        for (int q = 0; q < V; ++q) v[q] += wr[q][k] * g[q][K - 1 - k];
      }
      if (tau >= 0) {
        if (dx != nullptr) store_pack<V>(dx, tm.row(b, tau) * D + d0, v);
      } else if (dinit != nullptr) {
        store_pack<V>(dinit, (b * (K - 1) + tau + K - 1) * D + d0, v);
      }
    }
  }
  if (partial != nullptr) {
    const int64_t row = static_cast<int64_t>(blockIdx.y) * B + b;
#pragma unroll
    for (int k = 0; k <= K; ++k)
#pragma unroll
      for (int q = 0; q < V; ++q) partial[(row * (K + 1) + k) * D + d0 + q] = aw[q][k];
  }
}

// The streaming kernels serve K = kStreamK with every buffer aligned to V elements (V = 2 for 16-bit storage).
template <typename Tx>
constexpr int stream_v() {
  return sizeof(Tx) == 2 ? 2 : 1;
}
inline bool stream_ok(int64_t K, int64_t D, int V, std::initializer_list<const void*> ptrs, size_t elem) {
  if (K != kStreamK || D % V != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % (elem * V) != 0) return false;
  return true;
}

template <typename Tx, typename Tw>
void launch_fwd(const CausalConv1dFwdParams& p) {
  const int64_t n = p.B * p.L * p.D;
  if (n == 0) return;
  constexpr int V = stream_v<Tx>();
  if (p.B <= 65535 && stream_ok(p.K, p.D, V, {p.x, p.initial_state, p.y, p.final_state}, sizeof(Tx))) {
    const int64_t runs = (p.L + kStreamT - 1) / kStreamT;
    const dim3 grid(static_cast<unsigned>((p.D / V + kStreamBlock - 1) / kStreamBlock),
                    static_cast<unsigned>(runs < 65535 ? runs : 65535), static_cast<unsigned>(p.B));
    auto kernel = p.reset != nullptr ? conv_fwd_stream_kernel<Tx, Tw, kStreamK, V, true>
                                     : conv_fwd_stream_kernel<Tx, Tw, kStreamK, V, false>;
    kernel<<<grid, kStreamBlock, 0, cuda::stream()>>>(
        static_cast<const Tx*>(p.x), static_cast<const Tw*>(p.weight), static_cast<const Tw*>(p.bias),
        static_cast<const Tx*>(p.initial_state), TimeMap{p.L, p.reverse, p.reset}, static_cast<Tx*>(p.y),
        static_cast<Tx*>(p.final_state), p.D, p.silu);
    MT_CUDA_CHECK_LAUNCH();
    return;
  }
  conv_fwd_kernel<Tx, Tw><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(
      static_cast<const Tx*>(p.x), static_cast<const Tw*>(p.weight), static_cast<const Tw*>(p.bias),
      static_cast<const Tx*>(p.initial_state), TimeMap{p.L, p.reverse, p.reset}, static_cast<Tx*>(p.y),
      static_cast<Tx*>(p.final_state), p.B, p.D, p.K, p.silu);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename Tx, typename Tw>
void launch_bwd(const CausalConv1dBwdParams& p) {
  using C = typename Compute<Tx>::type;
  if (p.B * p.D == 0) return;
  constexpr int V = stream_v<Tx>();
  if (p.B <= 65535 &&
      stream_ok(p.K, p.D, V, {p.x, p.initial_state, p.dy, p.d_final, p.dx, p.d_initial_state}, sizeof(Tx))) {
    const int64_t runs = (p.L + kStreamT - 1) / kStreamT;
    const int64_t cols = std::max<int64_t>(1, std::min<int64_t>({runs, kStreamMaxRows / p.B, 65535}));
    const bool want_w = p.dweight || p.dbias;
    Tensor partial;
    if (want_w)
      partial = Tensor::empty({cols * p.B, p.K + 1, p.D}, std::is_same<C, double>::value ? DType::F64 : DType::F32,
                              Device::cuda(CudaContext::get().device()));
    const dim3 grid(static_cast<unsigned>((p.D / V + kStreamBlock - 1) / kStreamBlock), static_cast<unsigned>(cols),
                    static_cast<unsigned>(p.B));
    auto kernel = p.reset != nullptr ? conv_bwd_stream_kernel<Tx, Tw, kStreamK, V, true>
                                     : conv_bwd_stream_kernel<Tx, Tw, kStreamK, V, false>;
    kernel<<<grid, kStreamBlock, 0, cuda::stream()>>>(
        static_cast<const Tx*>(p.x), static_cast<const Tw*>(p.weight), static_cast<const Tw*>(p.bias),
        static_cast<const Tx*>(p.initial_state), TimeMap{p.L, p.reverse, p.reset}, static_cast<const Tx*>(p.dy),
        static_cast<const Tx*>(p.d_final), static_cast<Tx*>(p.dx), static_cast<Tx*>(p.d_initial_state),
        want_w ? static_cast<C*>(partial.data_ptr()) : nullptr, p.B, p.D, p.silu);
    MT_CUDA_CHECK_LAUNCH();
    if (want_w) {
      const int64_t n = (p.K + 1) * p.D;
      conv_reduce_kernel<C, Tw><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(
          static_cast<const C*>(partial.data_ptr()), cols * p.B, static_cast<Tw*>(p.dweight), static_cast<Tw*>(p.dbias),
          p.D, p.K);
      MT_CUDA_CHECK_LAUNCH();
    }
    return;
  }
  const int64_t smem = BwdSmem(p.K).total * static_cast<int64_t>(sizeof(C));
  MT_CHECK_SHAPE(smem <= 48 * 1024, "causal_conv1d_bwd_cuda: kernel width K = ", p.K,
                 " needs more shared memory than the kernel supports (", smem, " > 49152 bytes)");
  const int64_t dtiles = (p.D + kTileD - 1) / kTileD;
  MT_CHECK_SHAPE(dtiles <= 65535, "causal_conv1d_bwd_cuda: D = ", p.D, " channels exceed the grid limit");
  const int64_t ntiles = p.B * ((p.L + kTileL - 1) / kTileL);
  const int64_t nblk = ntiles < kMaxBlocksPerColumn ? ntiles : kMaxBlocksPerColumn;
  const bool want_w = p.dweight || p.dbias;
  Tensor partial;
  if (want_w)
    partial = Tensor::empty({nblk, p.K + 1, p.D}, std::is_same<C, double>::value ? DType::F64 : DType::F32,
                            Device::cuda(CudaContext::get().device()));
  dim3 grid(static_cast<unsigned>(nblk), static_cast<unsigned>(dtiles));
  dim3 block(kTileD, kRowsY);
  // The reset paths are a kernel of their own, so the plain one keeps its arithmetic and its speed.
  auto kernel = p.reset != nullptr ? conv_bwd_kernel<Tx, Tw, true> : conv_bwd_kernel<Tx, Tw, false>;
  kernel<<<grid, block, static_cast<size_t>(smem), cuda::stream()>>>(
      static_cast<const Tx*>(p.x), static_cast<const Tw*>(p.weight), static_cast<const Tw*>(p.bias),
      static_cast<const Tx*>(p.initial_state), TimeMap{p.L, p.reverse, p.reset}, static_cast<const Tx*>(p.dy),
      static_cast<const Tx*>(p.d_final), static_cast<Tx*>(p.dx), static_cast<Tx*>(p.d_initial_state),
      want_w ? static_cast<C*>(partial.data_ptr()) : nullptr, p.B, p.D, p.K, p.silu);
  MT_CUDA_CHECK_LAUNCH();
  if (want_w) {
    const int64_t n = (p.K + 1) * p.D;
    conv_reduce_kernel<C, Tw><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(static_cast<const C*>(partial.data_ptr()),
                                                                             nblk, static_cast<Tw*>(p.dweight),
                                                                             static_cast<Tw*>(p.dbias), p.D, p.K);
    MT_CUDA_CHECK_LAUNCH();
  }
}

void check_w_dtype(const char* what, DType dtype, DType w_dtype) {
  MT_CHECK_SHAPE(w_dtype == dtype || w_dtype == DType::F32, what, ": weight dtype must be ", dtype_name(dtype),
                 " or f32, got ", dtype_name(w_dtype));
}

}  // namespace

void causal_conv1d_fwd_cuda(const CausalConv1dFwdParams& p) {
  check_w_dtype("causal_conv1d_fwd_cuda", p.dtype, p.w_dtype);
  MT_CHECK_SHAPE(!p.reverse || (!p.initial_state && !p.final_state),
                 "causal_conv1d_fwd_cuda: the reverse conv takes no initial or final state");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.w_dtype == p.dtype)
      launch_fwd<T, T>(p);
    else
      launch_fwd<T, float>(p);
  });
}

void causal_conv1d_bwd_cuda(const CausalConv1dBwdParams& p) {
  check_w_dtype("causal_conv1d_bwd_cuda", p.dtype, p.w_dtype);
  MT_CHECK_SHAPE(!p.reverse || (!p.initial_state && !p.d_final && !p.d_initial_state),
                 "causal_conv1d_bwd_cuda: the reverse conv takes no initial or final state");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.w_dtype == p.dtype)
      launch_bwd<T, T>(p);
    else
      launch_bwd<T, float>(p);
  });
}

}  // namespace mt::kernels
