// CUDA selective scan, forward and backward (math in kernels/selective_scan.h).
//
// Work split. A block owns 32 channels (one per lane) of one batch row and one chunk of timesteps; its warps split
// the N states, NPT per thread (warp w owns states NPT w .. NPT w + NPT - 1; NPT = 2 up to N = 16, 4 above), so a
// block has NMAX / NPT warps and every thread keeps NPT states in registers. Time is walked in tiles of TT steps:
// the block stages the tile's d' = softplus(delta + bias), u, B, C (and dy, z in the backward) in shared memory,
// each thread runs its NPT recurrences over the tile, and the sums over n (y, du, d delta) meet in shared memory.
// The next tile's global loads are issued before the current tile's arithmetic, so their latency hides behind it.
// Masked steps become d' = 0 in the staged tile (a = 1, b = 0: the state passes through), and so do the padding
// steps of a partial last tile, which keeps the inner loops free of branches.
//
// Chunks. The recurrence h_t = a_t h_{t-1} + b_t is linear in h, so a chunk maps its entering state H to P H + S with
// P = exp(A * sum d') and S its end state from zero; backwards, a chunk maps the gradient leaving it, G, to P G + R.
// When B * D is too small to fill the GPU (B = 1 at long L), the sequence is cut into chunks: a local pass computes
// S (and R), scan_combine_kernel walks the chunks of each (b, d, n) and turns them into the state entering / the
// gradient leaving every chunk, and the chunks then run independently. With enough channels there is one chunk and
// no local pass (bf16 B=8 L=2048 D=1536 N=16: one pass of N exponentials per channel and step in the forward).
//
// Backward. Per chunk: the state entering every tile (Hs, B*D*N*L/TT values) comes from the forward (which writes it
// when asked, p.tile_states) or from a checkpoint pass of its own; then the
// backward kernel walks the tiles last to first, recomputes the tile's states from its checkpoint into registers
// (TT x NPT per thread), computes y0 for dz, and runs the reverse recurrence for g = dLoss/dh. Nothing of size B*L*D*N
// is stored.
//
// Determinism: no atomics. dB_t, dC_t (sums over d) are reduced over the warp's 32 channels in shared memory, and
// the per-block partials (one per 32 channels) are summed in a fixed order by reduce_rows_kernel, as are dA (over b
// and chunks), dD and dbias. The results are bitwise reproducible run to run.
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/selective_scan.h"

namespace mt::kernels {

namespace {

using mt::cuda::Compute;
using mt::cuda::from_compute;
using mt::cuda::load;


// Timesteps per tile (and checkpoint stride of the backward); f64 halves it to keep shared memory in bounds.
// RS: steps per warp reduction of dB / dC in the backward (2 * NPT values per step; 32 in all for f32).
template <typename W, int NPT> struct Tiling {
  static constexpr int TT = sizeof(W) == 8 ? 8 : 16;
  static constexpr int RS = (sizeof(W) == 8 ? 8 : 16) / NPT;
};
// States per thread: 2 up to N = 16 (twice the warps to hide latency with), 4 above (blocks of at most 512).
template <int NMAX> constexpr int npt_for() { return NMAX <= 16 ? 2 : 4; }

template <typename W, int K> struct alignas(sizeof(W) * K < 16 ? sizeof(W) * K : 16) Vec {
  W v[K];
};

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;
__device__ __forceinline__ float ex2_(float x) {  // MUFU.EX2: about 2 ulp; results below 2^-126 flush to 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2_(float x) {  // MUFU.LG2: absolute error about 2^-22 on [0.5, 2]
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// a = exp(d' A) = 2^(d' * A log2 e) with A log2 e precomputed: one multiply and MUFU.EX2 (a decay below 2^-126
// flushes to 0). f64 uses the accurate exp2.
__device__ __forceinline__ float decay(float dt, float A2) { return ex2_(dt * A2); }
__device__ __forceinline__ double decay(double dt, double A2) { return exp2(dt * A2); }
__device__ __forceinline__ float exp_decay(float x) { return ex2_(x * static_cast<float>(kLog2e)); }
__device__ __forceinline__ double exp_decay(double x) { return exp(x); }

// softplus(x) (x for x > 20, as PyTorch / mamba) and its derivative sigmoid(x). f32 from one MUFU.EX2 and one
// MUFU.LG2 instead of expf + log1pf (those cost about 50 instructions per channel and step, more than the N-state
// recurrence itself at N = 16): log1p(e) by its series below e = 0.01 (error e^5 / 5), by lg2(1 + e) ln 2 above
// (relative error below 1e-5). f64: the accurate library functions.
__device__ __forceinline__ void softplus_(float x, float& sp, float& dsp) {
  const float e = ex2_(x * static_cast<float>(kLog2e));
  const float series = e * (1.0f - e * (0.5f - e * (1.0f / 3.0f - 0.25f * e)));
  const float via_log = lg2_(1.0f + e) * static_cast<float>(kLn2);
  sp = x > 20.0f ? x : (e < 0.01f ? series : via_log);
  dsp = x > 20.0f ? 1.0f : __fdividef(e, 1.0f + e);
}
__device__ __forceinline__ void softplus_(double x, double& sp, double& dsp) {
  if (x > 20.0) {
    sp = x;
    dsp = 1.0;
    return;
  }
  const double e = exp(x);
  sp = log1p(e);
  dsp = e / (1.0 + e);
}
// sigmoid(x): f32 as 1 / (1 + 2^(-x log2 e)) with MUFU.EX2 and MUFU.RCP (0 and 1 at the extremes, no NaN).
__device__ __forceinline__ float sigmoid_(float x) {
  return __fdividef(1.0f, 1.0f + ex2_(-x * static_cast<float>(kLog2e)));
}
__device__ __forceinline__ double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }

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

// Chunk-buffer index (S, R, H0, Gend): [(b * nch + k) * N + n] * D + d, d fastest (coalesced).
__device__ __forceinline__ int64_t cidx(int64_t b, int64_t k, int64_t n, int64_t d, int64_t nch, int64_t N,
                                        int64_t D) {
  return ((b * nch + k) * N + n) * D + d;
}

// ---------------------------------------------------------------------------------------------------------------
// Tile staging shared by the kernels: the global loads of one tile into registers (issued early), then their
// conversion into shared memory once the previous tile is done with it.
//   sDU[t][lane] = {d', u} (0, 0 on masked / padding steps), sB / sC [t][n] (0 beyond N and on padding rows),
//   sM[t] = step is real, and with DY: sDy[t][lane] = dy0 = dy silu(z) (0 on masked steps), sG[t][lane] = {dz
//   factor, dd'/d delta} with dz = y0 * dz factor; with ZY: sZ[t][lane] = silu(z) (1 without z). Separate arrays
//   so that every read of one value per lane is a conflict-free 4- or 8-byte load.
template <typename T, int NMAX, int NPT, bool C, bool DY, bool ZY>
struct Stage {
  using W = typename Compute<T>::type;
  static constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tiling<W, NPT>::TT;
  static constexpr int RW = (TT * 32 + NT - 1) / NT;    // (t, channel) elements per thread
  static constexpr int RB = (TT * NMAX + NT - 1) / NT;  // B / C elements per thread
  W dl[RW], uu[RW], gy[DY ? RW : 1], zz[DY || ZY ? RW : 1];
  bool m[RW];
  W bb[RB], cc[C ? RB : 1];

  // The columns n >= N of sB / sC: zero once, never written again (commit writes n < N only).
  __device__ __forceinline__ static void clear_padding(W* sB, W* sC) {
    for (int i = threadIdx.x; i < TT * NMAX; i += NT) {
      sB[i] = W(0);
      if (C) sC[i] = W(0);
    }
  }

  __device__ __forceinline__ void load_tile(const SelectiveScanParams& p, int64_t b, int64_t d, bool active,
                                            int64_t t0, int len) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int i = tid + r * NT, t = i >> 5;
      m[r] = false;
      if (i < TT * 32 && t < len && active) {
        const int64_t idx = (b * p.L + t0 + t) * p.D + d;
        m[r] = mask_real(p.mask, p.mask_dtype, b * p.L + t0 + t);
        dl[r] = load(static_cast<const T*>(p.delta), idx);
        uu[r] = load(static_cast<const T*>(p.u), idx);
        if (DY) gy[r] = load(static_cast<const T*>(p.dy), idx);
        if (DY || ZY) zz[r] = p.z ? load(static_cast<const T*>(p.z), idx) : W(0);
      }
    }
    const int64_t base = (b * p.L + t0) * p.N;
    const int nvalid = len * static_cast<int>(p.N);
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT;
      if (i < nvalid) {
        bb[r] = load(static_cast<const T*>(p.Bm), base + i);
        if (C) cc[r] = load(static_cast<const T*>(p.Cm), base + i);
      }
    }
  }

  __device__ __forceinline__ void commit(const SelectiveScanParams& p, int64_t b, int64_t t0, int len, W bias,
                                         Vec<W, 2> (*sDU)[32], W* sB, W* sC, W (*sDy)[32], Vec<W, 2> (*sG)[32],
                                         W (*sZ)[32], bool* sM) {
    const int tid = threadIdx.x, lane = tid & 31;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int i = tid + r * NT, t = i >> 5;
      if (i >= TT * 32) continue;
      Vec<W, 2> du;
      du.v[0] = W(0);
      du.v[1] = W(0);
      Vec<W, 2> gv;
      gv.v[0] = gv.v[1] = W(0);
      W dy0 = W(0);
      W zf = W(0);  // silu(z), 1 without z, 0 on masked steps
      if (m[r]) {
        const W raw = dl[r] + bias;
        W dsp = W(1);
        du.v[0] = raw;
        if (p.delta_softplus) softplus_(raw, du.v[0], dsp);
        du.v[1] = uu[r];
        W s = W(1);
        zf = W(1);
        if ((DY || ZY) && p.z) {
          s = sigmoid_(zz[r]);
          zf = zz[r] * s;
        }
        if (DY) {
          if (p.z) gv.v[0] = gy[r] * s * (W(1) + zz[r] * (W(1) - s));
          gv.v[1] = dsp;
          dy0 = gy[r] * zf;
        }
      }
      sDU[t][lane] = du;
      if (DY) {
        sDy[t][lane] = dy0;
        sG[t][lane] = gv;
      }
      if (ZY) sZ[t][lane] = zf;
      // Lane 0's channel (the block's first) always exists, so it knows whether row t is a real step.
      if (lane == 0) sM[t] = t < len && mask_real(p.mask, p.mask_dtype, b * p.L + t0 + t);
    }
    const int N = static_cast<int>(p.N), nvalid = len * N;
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT;
      if (i < TT * N) {
        const int o = N == NMAX ? i : i / N * NMAX + i % N;  // row-major [t][NMAX]; no division at N = NMAX
        sB[o] = i < nvalid ? bb[r] : W(0);
        if (C) sC[o] = i < nvalid ? cc[r] : W(0);
      }
    }
  }
};

enum class Pass { Y, Local, LocalGrad, Checkpoint };

// ---------------------------------------------------------------------------------------------------------------
// Forward-direction pass over chunk blockIdx.y of batch row blockIdx.z, channels blockIdx.x * 32 + lane.
//   Y:          y from the entering state (H0[chunk], or initial_state / 0 with one chunk; then writes last_state);
//               with out0 set, also the Checkpoint pass's tile states (the backward then skips that pass).
//   Local:      S = end state from zero (out0) and sum of d' (sumdt) per chunk.
//   LocalGrad:  also R = sum_t (prod_{s<=t} a_s) C_t dy0_t (out1).
//   Checkpoint: the state entering every tile into out0 (Hs: [(b * nT + tile) * N + n] * D + d).
// Dynamic shared memory (Y): sY [G][TT][32], the per-warp partial sums of C h.
template <typename T, int NMAX, int NPT, Pass PASS>
__global__ void __launch_bounds__(NMAX / NPT * 32)
    scan_fwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* H0,
                    typename Compute<T>::type* out0, typename Compute<T>::type* out1,
                    typename Compute<T>::type* sumdt) {
  using W = typename Compute<T>::type;
  constexpr bool kC = PASS == Pass::Y || PASS == Pass::LocalGrad;
  constexpr bool kDY = PASS == Pass::LocalGrad;
  using St = Stage<T, NMAX, NPT, kC, kDY, PASS == Pass::Y>;
  constexpr int G = St::G, TT = St::TT;
  __shared__ Vec<W, 2> sDU[TT][32];
  __shared__ Vec<W, NPT> sBv[TT][G];
  __shared__ Vec<W, NPT> sCv[kC ? TT : 1][G];
  __shared__ W sDy[kDY ? TT : 1][32];
  __shared__ Vec<W, 2> sG[kDY ? TT : 1][32];
  __shared__ W sZ[PASS == Pass::Y ? TT : 1][32];
  __shared__ bool sM[TT];
  extern __shared__ __align__(16) unsigned char smem_raw[];
  W* sY = reinterpret_cast<W*>(smem_raw);
  W* sB = reinterpret_cast<W*>(sBv);
  W* sC = reinterpret_cast<W*>(sCv);

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y, b = blockIdx.z;
  const bool active = d < D;
  const W* A = static_cast<const W*>(p.A);
  const W* init = static_cast<const W*>(p.initial_state);

  W A2[NPT], h[NPT], Pc[NPT], Rc[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    const int n = grp * NPT + j;
    const bool on = active && n < N;
    A2[j] = on ? A[d * N + n] * W(kLog2e) : W(0);
    h[j] = W(0);
    Pc[j] = W(1);
    Rc[j] = W(0);
    if ((PASS == Pass::Y || PASS == Pass::Checkpoint) && on) {
      if (H0) h[j] = H0[cidx(b, k, n, d, nch, N, D)];
      else if (init) h[j] = init[(b * D + d) * N + n];
    }
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sB, sC);
  W sdt = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  St st;
  st.load_tile(p, b, d, active, t_begin, static_cast<int>(t_end - t_begin < TT ? t_end - t_begin : TT));
  for (int64_t t0 = t_begin; t0 < t_end; t0 += TT) {
    const int len = static_cast<int>(t_end - t0 < TT ? t_end - t0 : TT);
    if ((PASS == Pass::Checkpoint || (PASS == Pass::Y && out0 != nullptr)) && active) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = grp * NPT + j;
        if (n < N) out0[((b * nT + t0 / TT) * N + n) * D + d] = h[j];
      }
    }
    __syncthreads();  // the previous tile's readers are done
    st.commit(p, b, t0, len, bias, sDU, sB, sC, sDy, sG, sZ, sM);
    __syncthreads();
    if (t0 + TT < t_end) {
      const int64_t t1 = t0 + TT;
      st.load_tile(p, b, d, active, t1, static_cast<int>(t_end - t1 < TT ? t_end - t1 : TT));
    }
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const Vec<W, 2> du = sDU[t][lane];
      const W dtu = du.v[0] * du.v[1];
      const Vec<W, NPT> Bv = sBv[t][grp];
      Vec<W, NPT> Cv;
      if (kC) Cv = sCv[t][grp];
      W dy0 = W(0);
      if (kDY) dy0 = sDy[t][lane];
      W acc = W(0);
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const W a = decay(du.v[0], A2[j]);
        h[j] = a * h[j] + dtu * Bv.v[j];
        if (PASS == Pass::Y) acc += Cv.v[j] * h[j];
        if (kDY) {
          Pc[j] *= a;
          Rc[j] += Pc[j] * Cv.v[j] * dy0;
        }
      }
      if (PASS == Pass::Y) sY[(grp * TT + t) * 32 + lane] = acc;
      sdt += du.v[0];
    }
    if (PASS == Pass::Y) {
      __syncthreads();
      T* y = static_cast<T*>(p.y);
      for (int i = tid; i < len * 32; i += St::NT) {
        const int t = i >> 5;
        if (!active) continue;
        const int64_t idx = (b * L + t0 + t) * D + d;
        W yv = Dd * sDU[t][lane].v[1];  // masked: sZ = 0 makes y = 0
#pragma unroll
        for (int g = 0; g < G; ++g) yv += sY[(g * TT + t) * 32 + lane];
        y[idx] = from_compute<T>(yv * sZ[t][lane]);
      }
    }
  }
  if (!active) return;
  if (PASS == Pass::Y && H0 == nullptr && p.last_state) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) static_cast<W*>(p.last_state)[(b * D + d) * N + n] = h[j];
    }
  }
  if (PASS == Pass::Local || PASS == Pass::LocalGrad) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) {
        out0[cidx(b, k, n, d, nch, N, D)] = h[j];
        if (kDY) out1[cidx(b, k, n, d, nch, N, D)] = Rc[j];
      }
    }
    if (grp == 0) sumdt[(b * nch + k) * D + d] = sdt;
  }
}

// Sequential combine over chunks, thread per (b, n, d). grid (ceil(D / 128), N, B), block 128.
//   Sb (optional): S -> H0 (state entering each chunk), from initial_state; writes last (optional).
//   Rb (optional): R -> Gend (gradient leaving each chunk), from dlast_state.
template <typename W>
__global__ void scan_combine_kernel(SelectiveScanParams p, int64_t nch, W* Sb, W* Rb, const W* sumdt, W* last) {
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
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward over chunk blockIdx.y of batch row blockIdx.z, channels blockIdx.x * 32 + lane, tiles last to first.
// Gend: gradient leaving each chunk (null with one chunk: dlast_state or 0). Hs: the checkpoint pass's tile states.
// Partial outputs (summed by reduce_rows_kernel in a fixed order):
//   pBC [nDb][2][B][L][N]  dB (0) and dC (1) summed over the block's 32 channels
//   pA  [B * nch][D][N]     dA;   pDD, pBias [B * nch][D]   dD, dbias
// Dynamic shared memory: sY [G][TT][32] (y0 partials, then du partials), sQ [G][TT][32] (d d' partials),
// sP [G][32][PS] (row c: lane c's dB / dC values of RS steps, 2 * NPT per step; PS = RS * 2 * NPT + NPT keeps the
// two NPT-wide stores per step (f32) and the column sums free of bank conflicts).
template <typename T, int NMAX, int NPT>
__global__ void __launch_bounds__(NMAX / NPT * 32)
    scan_bwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* Hs,
                    const typename Compute<T>::type* Gend, typename Compute<T>::type* pBC,
                    typename Compute<T>::type* pA, typename Compute<T>::type* pDD,
                    typename Compute<T>::type* pBias) {
  using W = typename Compute<T>::type;
  using St = Stage<T, NMAX, NPT, true, true, false>;
  constexpr int G = St::G, TT = St::TT, NT = St::NT, RS = Tiling<W, NPT>::RS, V = 2 * NPT;
  constexpr int PS = RS * V + NPT;
  __shared__ Vec<W, 2> sDU[TT][32];
  __shared__ Vec<W, NPT> sBv[TT][G];
  __shared__ Vec<W, NPT> sCv[TT][G];
  __shared__ W sDy[TT][32];
  __shared__ Vec<W, 2> sG[TT][32];
  __shared__ bool sM[TT];
  extern __shared__ __align__(16) unsigned char smem_raw[];
  W* sY = reinterpret_cast<W*>(smem_raw);
  W* sQ = sY + G * TT * 32;
  W* sPw = sQ + G * TT * 32 + (threadIdx.x >> 5) * (32 * PS);  // this warp's dB / dC staging
  W* sB = reinterpret_cast<W*>(sBv);
  W* sC = reinterpret_cast<W*>(sCv);

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y, b = blockIdx.z;
  const bool active = d < D;
  const W* A = static_cast<const W*>(p.A);
  const W* dlast = static_cast<const W*>(p.dlast_state);

  W A2[NPT], Ar[NPT], g[NPT], dA_acc[NPT], hn[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    const int n = grp * NPT + j;
    const bool on = active && n < N;
    Ar[j] = on ? A[d * N + n] : W(0);
    A2[j] = Ar[j] * W(kLog2e);
    g[j] = W(0);
    if (on) {
      if (Gend) g[j] = Gend[cidx(b, k, n, d, nch, N, D)];
      else if (dlast) g[j] = dlast[(b * D + d) * N + n];
    }
    dA_acc[j] = W(0);
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sB, sC);
  W dD_acc = W(0), dbias_acc = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  const int64_t t_last = t_begin + (t_end - 1 - t_begin) / TT * TT;  // tiles before it are full
  auto load_state = [&](int64_t t0) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      hn[j] = (active && n < N) ? Hs[((b * nT + t0 / TT) * N + n) * D + d] : W(0);
    }
  };
  St st;
  st.load_tile(p, b, d, active, t_last, static_cast<int>(t_end - t_last));
  load_state(t_last);
  for (int64_t t0 = t_last; t0 >= t_begin; t0 -= TT) {
    const int len = static_cast<int>(t_end - t0 < TT ? t_end - t0 : TT);
    W h[NPT];
#pragma unroll
    for (int j = 0; j < NPT; ++j) h[j] = hn[j];
    __syncthreads();  // the previous tile's readers are done
    st.commit(p, b, t0, len, bias, sDU, sB, sC, sDy, sG, nullptr, sM);  // no sZ: ZY is off
    __syncthreads();
    if (t0 - TT >= t_begin) {
      st.load_tile(p, b, d, active, t0 - TT, TT);
      load_state(t0 - TT);
    }

    // Recompute the tile's states from its checkpoint: hp[t] = h_{t0+t-1}; per-warp partials of y0 for dz.
    W hp[TT][NPT];
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const Vec<W, 2> du = sDU[t][lane];
      const W dtu = du.v[0] * du.v[1];
      const Vec<W, NPT> Bv = sBv[t][grp];
      const Vec<W, NPT> Cv = sCv[t][grp];
      W acc = W(0);
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        hp[t][j] = h[j];
        h[j] = decay(du.v[0], A2[j]) * h[j] + dtu * Bv.v[j];
        acc += Cv.v[j] * h[j];
      }
      if (p.z) sY[(grp * TT + t) * 32 + lane] = acc;
    }
    if (p.z) {
      __syncthreads();
      T* dz = static_cast<T*>(p.dz);
      for (int i = tid; i < len * 32; i += NT) {
        const int t = i >> 5;
        if (!active) continue;
        W y0 = Dd * sDU[t][lane].v[1];  // masked: u = 0 and the dz factor is 0
#pragma unroll
        for (int q = 0; q < G; ++q) y0 += sY[(q * TT + t) * 32 + lane];
        dz[(b * L + t0 + t) * D + d] = from_compute<T>(y0 * sG[t][lane].v[0]);
      }
      __syncthreads();  // sY is reused for the du partials
    }

    // Reverse recurrence over the tile; g = dLoss/dh_t.
#pragma unroll
    for (int t = TT - 1; t >= 0; --t) {
      const Vec<W, 2> du = sDU[t][lane];
      const W dt = du.v[0], uu = du.v[1], dtu = dt * uu;
      const W dy0 = sDy[t][lane];
      const Vec<W, NPT> Bv = sBv[t][grp];
      const Vec<W, NPT> Cv = sCv[t][grp];
      const int s = t % RS;
      W duP = W(0), ddtP = W(0);
      Vec<W, NPT> pB, pC;
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const W a = decay(dt, A2[j]);
        const W hpv = hp[t][j];
        pC.v[j] = dy0 * (a * hpv + dtu * Bv.v[j]);  // dC_t = dy0 h_t
        g[j] += Cv.v[j] * dy0;
        pB.v[j] = g[j] * dtu;  // dB_t = g d' u
        const W gB = g[j] * Bv.v[j];
        duP += gB;
        const W gah = g[j] * a * hpv;
        dA_acc[j] += gah * dt;
        ddtP += gah * Ar[j] + gB * uu;
        g[j] *= a;
      }
      *reinterpret_cast<Vec<W, NPT>*>(sPw + lane * PS + s * V) = pB;
      *reinterpret_cast<Vec<W, NPT>*>(sPw + lane * PS + s * V + NPT) = pC;
      sY[(grp * TT + t) * 32 + lane] = duP * dt;
      sQ[(grp * TT + t) * 32 + lane] = ddtP;
      if (s == 0) {  // steps t .. t + RS - 1 are staged: lane sl * V + q sums value q of step t + sl
        __syncwarp();
        if (lane < RS * V) {
          W tot = W(0);
#pragma unroll 8
          for (int c = 0; c < 32; ++c) tot += sPw[c * PS + lane];
          const int sl = lane / V, q = lane % V, n = grp * NPT + q % NPT;
          const int64_t ta = t0 + t + sl;
          if (t + sl < len && n < N)
            pBC[((static_cast<int64_t>(blockIdx.x) * 2 + q / NPT) * p.B * L + b * L + ta) * N + n] = tot;
        }
        __syncwarp();
      }
    }
    __syncthreads();
    T* du_out = static_cast<T*>(p.du);
    T* dd_out = static_cast<T*>(p.ddelta);
    for (int i = tid; i < len * 32; i += NT) {
      const int t = i >> 5;
      if (!active) continue;
      const int64_t idx = (b * L + t0 + t) * D + d;
      W duv = W(0), ddv = W(0);
      if (sM[t]) {
        const W dy0 = sDy[t][lane];
        duv = Dd * dy0;
#pragma unroll
        for (int q = 0; q < G; ++q) {
          duv += sY[(q * TT + t) * 32 + lane];
          ddv += sQ[(q * TT + t) * 32 + lane];
        }
        ddv *= sG[t][lane].v[1];
        dD_acc += dy0 * sDU[t][lane].v[1];
        dbias_acc += ddv;
      }
      du_out[idx] = from_compute<T>(duv);
      dd_out[idx] = from_compute<T>(ddv);
    }
  }

  if (active) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) {
        pA[((b * nch + k) * D + d) * N + n] = dA_acc[j];
        if (k == 0 && p.dinitial_state) static_cast<W*>(p.dinitial_state)[(b * D + d) * N + n] = g[j];
      }
    }
  }
  // dD and dbias: the G threads of a channel (one per warp) summed in a fixed order.
  __syncthreads();
  sY[grp * 32 + lane] = dD_acc;
  sQ[grp * 32 + lane] = dbias_acc;
  __syncthreads();
  if (grp == 0 && active) {
    W a = W(0), c = W(0);
#pragma unroll
    for (int q = 0; q < G; ++q) {
      a += sY[q * 32 + lane];
      c += sQ[q * 32 + lane];
    }
    pDD[(b * nch + k) * D + d] = a;
    pBias[(b * nch + k) * D + d] = c;
  }
}

// out[i] = sum_r in[r * M + i] in order r = 0, 1, ..; i < M0 goes to out0[i], the rest to out1[i - M0].
template <typename W>
__global__ void reduce_rows_kernel(const W* in, int64_t R, int64_t M, W* out0, int64_t M0, W* out1) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += in[r * M + i];
    if (i < M0) out0[i] = s;
    else out1[i - M0] = s;
  }
}

template <typename W>
void reduce_rows(const W* in, int64_t R, int64_t M, W* out0, int64_t M0 = -1, W* out1 = nullptr) {
  if (M0 < 0) M0 = M;
  reduce_rows_kernel<W><<<cuda::grid_for(M, 256), 256, 0, cuda::stream()>>>(in, R, M, out0, M0, out1);
  MT_CUDA_CHECK_LAUNCH();
}

// Call f(std::integral_constant<int, NMAX>) with the smallest NMAX in {4, 8, 16, 32, 64} that holds N.
template <typename F>
void dispatch_nmax(int64_t N, F&& f) {
  if (N <= 4) f(std::integral_constant<int, 4>{});
  else if (N <= 8) f(std::integral_constant<int, 8>{});
  else if (N <= 16) f(std::integral_constant<int, 16>{});
  else if (N <= 32) f(std::integral_constant<int, 32>{});
  else f(std::integral_constant<int, 64>{});
}

void check_params(const SelectiveScanParams& p, const char* what) {
  MT_CHECK_SHAPE(p.N >= 1 && p.N <= kSelectiveScanCudaMaxN, what, ": N must be in [1, ", kSelectiveScanCudaMaxN,
                 "], got ", p.N);
  MT_CHECK_SHAPE(p.B >= 1 && p.B <= 65535, what, ": B must be in [1, 65535], got ", p.B);
  MT_CHECK_SHAPE(p.L >= 1 && p.D >= 1, what, ": L and D must be >= 1, got L = ", p.L, ", D = ", p.D);
}

// Chunks along L: one unless the (b, channel-block) blocks give fewer than kMinThreads threads, then as many as
// reach it, each at least 4 tiles long. Returns {chunk length (a multiple of TT), number of chunks}. Each chunk
// beyond one costs a local pass (the forward's work again), so the bar is the fewest threads that keep the H200
// busy: bf16 B=1 L=65536 D=1536 N=16 forward 7.6 ms at 32768 (3 chunks), 2.9 ms at 98304 (8 chunks), while
// B=8 L=2048 (98304 threads in one chunk) would lose 0.2 ms to a second chunk.
constexpr int64_t kMinThreads = 98304;
std::pair<int64_t, int64_t> chunking(const SelectiveScanParams& p, int NT, int TT) {
  const int64_t per_chunk = p.B * ((p.D + 31) / 32) * NT;
  int64_t nch = (kMinThreads + per_chunk - 1) / per_chunk;
  nch = std::max<int64_t>(1, std::min<int64_t>(nch, (p.L + 4 * TT - 1) / (4 * TT)));
  int64_t CL = (p.L + nch - 1) / nch;
  CL = (CL + TT - 1) / TT * TT;
  return {CL, (p.L + CL - 1) / CL};
}

template <typename W>
void launch_combine(const SelectiveScanParams& p, int64_t nch, W* Sb, W* Rb, const W* sumdt, W* last) {
  const dim3 grid(static_cast<unsigned>((p.D + 127) / 128), static_cast<unsigned>(p.N), static_cast<unsigned>(p.B));
  scan_combine_kernel<W><<<grid, 128, 0, cuda::stream()>>>(p, nch, Sb, Rb, sumdt, last);
  MT_CUDA_CHECK_LAUNCH();
}

// Static plus dynamic shared memory above 48 KiB needs an opt-in per kernel (once per instantiation).
template <typename K>
void allow_smem(K* kernel, size_t bytes, bool& done) {
  if (done) return;
  MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done = true;
}

template <typename T, int NMAX, int NPT>
void scan_fwd(const SelectiveScanParams& p) {
  using W = typename Compute<T>::type;
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tiling<W, NPT>::TT;
  const auto [CL, nch] = chunking(p, NT, TT);
  const dim3 grid(static_cast<unsigned>((p.D + 31) / 32), static_cast<unsigned>(nch), static_cast<unsigned>(p.B));
  const size_t smem_y = sizeof(W) * G * TT * 32;
  static bool smem_set = false;  // one per template instantiation
  allow_smem(scan_fwd_kernel<T, NMAX, NPT, Pass::Y>, smem_y, smem_set);
  W* Hs = static_cast<W*>(p.tile_states);
  if (nch == 1) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Y>
        <<<grid, NT, smem_y, cuda::stream()>>>(p, CL, 1, nullptr, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
    return;
  }
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const int64_t nS = p.B * nch * p.N * p.D;
  Tensor ws = Tensor::empty({nS + p.B * nch * p.D}, wdt, Device::cuda(CudaContext::get().device()));
  W* Sb = static_cast<W*>(ws.data_ptr());  // stream-ordered reuse through the caching allocator
  W* sumdt = Sb + nS;
  scan_fwd_kernel<T, NMAX, NPT, Pass::Local><<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, nullptr, Sb, nullptr, sumdt);
  MT_CUDA_CHECK_LAUNCH();
  launch_combine<W>(p, nch, Sb, nullptr, sumdt, static_cast<W*>(p.last_state));
  scan_fwd_kernel<T, NMAX, NPT, Pass::Y><<<grid, NT, smem_y, cuda::stream()>>>(p, CL, nch, Sb, Hs, nullptr, nullptr);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename T, int NMAX, int NPT>
void scan_bwd(const SelectiveScanParams& p) {
  using W = typename Compute<T>::type;
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tiling<W, NPT>::TT, RS = Tiling<W, NPT>::RS;
  constexpr int PS = RS * 2 * NPT + NPT;
  const auto [CL, nch] = chunking(p, NT, TT);
  const int64_t B = p.B, L = p.L, D = p.D, N = p.N, nDb = (D + 31) / 32, nT = (L + TT - 1) / TT;
  const dim3 grid(static_cast<unsigned>(nDb), static_cast<unsigned>(nch), static_cast<unsigned>(B));
  const bool have_hs = p.tile_states != nullptr;  // written by the forward
  const int64_t nHs = have_hs ? 0 : B * nT * N * D;
  const int64_t nBC = nDb * 2 * B * L * N, nA = B * nch * D * N, nDD = B * nch * D;
  const int64_t nS = nch > 1 ? B * nch * N * D : 0;
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  Tensor ws = Tensor::empty({nHs + nBC + nA + 2 * nDD + 2 * nS + (nch > 1 ? nDD : 0)}, wdt,
                            Device::cuda(CudaContext::get().device()));
  W* Hs = have_hs ? static_cast<W*>(p.tile_states) : static_cast<W*>(ws.data_ptr());
  W* pBC = static_cast<W*>(ws.data_ptr()) + nHs;
  W* pA = pBC + nBC;
  W* pDD = pA + nA;
  W* pBias = pDD + nDD;
  W* Sb = nch > 1 ? pBias + nDD : nullptr;
  W* Rb = nch > 1 ? Sb + nS : nullptr;
  W* sumdt = nch > 1 ? Rb + nS : nullptr;
  if (nch > 1) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::LocalGrad><<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, nullptr, Sb, Rb, sumdt);
    MT_CUDA_CHECK_LAUNCH();
    launch_combine<W>(p, nch, Sb, Rb, sumdt, nullptr);
  }
  if (!have_hs) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Checkpoint>
        <<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, Sb, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
  }
  const size_t smem = sizeof(W) * (2 * static_cast<size_t>(G) * TT * 32 + static_cast<size_t>(G) * 32 * PS);
  static bool smem_set = false;  // one per template instantiation
  allow_smem(scan_bwd_kernel<T, NMAX, NPT>, smem, smem_set);
  scan_bwd_kernel<T, NMAX, NPT><<<grid, NT, smem, cuda::stream()>>>(p, CL, nch, Hs, Rb, pBC, pA, pDD, pBias);
  MT_CUDA_CHECK_LAUNCH();
  reduce_rows<W>(pBC, nDb, 2 * B * L * N, static_cast<W*>(p.dBm), B * L * N, static_cast<W*>(p.dCm));
  reduce_rows<W>(pA, B * nch, D * N, static_cast<W*>(p.dA));
  if (p.dD_skip) reduce_rows<W>(pDD, B * nch, D, static_cast<W*>(p.dD_skip));
  if (p.ddelta_bias) reduce_rows<W>(pBias, B * nch, D, static_cast<W*>(p.ddelta_bias));
}

}  // namespace

void selective_scan_fwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_fwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_fwd<T, NMAX, npt_for<NMAX>()>(p);
    });
  });
}

int64_t selective_scan_tile_states_numel_cuda(const SelectiveScanParams& p) {
  const int64_t TT = p.dtype == DType::F64 ? Tiling<double, 2>::TT : Tiling<float, 2>::TT;
  return p.B * ((p.L + TT - 1) / TT) * p.N * p.D;
}

void selective_scan_bwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_bwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_bwd<T, NMAX, npt_for<NMAX>()>(p);
    });
  });
}

}  // namespace mt::kernels
