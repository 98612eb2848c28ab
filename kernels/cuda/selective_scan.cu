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
// (TT x NPT per thread), computes y0 for dz, and runs the reverse recurrence for g = dLoss/dh, half a tile at a time
// (the per-warp partials of du and dd' then fit beside 3 blocks per SM). Nothing of size B*L*D*N is stored.
//
// Instruction issue and shared-memory traffic bound these kernels, not DRAM bandwidth (the forward uses about 18% of
// the copy rate): the shared layouts give one vector load per step for {d', d' u} and for a warp's {B, C}, the
// backward's other per-(t, channel) values sit in arrays of their own so each loop loads only what it uses (one
// 128-byte wavefront per warp and value), every staging index is a compile-time offset from threadIdx.x, and the
// next tile's inputs travel by cp.async, so no register waits for them. bf16 B=8 L=2048 D=1536 N=16 on the H200:
// forward 0.248 ms (0.437 before), forward+backward 1.183 ms (1.968).
//
// Determinism: no atomics. dB_t, dC_t (sums over d) are reduced over the warp's 32 channels in shared memory, the
// per-block partials (one per 32 channels) are summed in a fixed order by reduce_bc_kernel, and dA (over b and
// chunks), dD and dbias by reduce_rows_kernel. The results are bitwise reproducible run to run.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
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
template <typename W, int NPT>
struct Tiling {
  static constexpr int TT = sizeof(W) == 8 ? 8 : 16;
  static constexpr int RS = (sizeof(W) == 8 ? 8 : 16) / NPT;
};
// States per thread: 2 up to N = 16 (twice the warps to hide latency with), 4 above (blocks of at most 512).
template <int NMAX>
constexpr int npt_for() {
  return NMAX <= 16 ? 2 : 4;
}

template <typename W, int K>
struct alignas(sizeof(W) * K < 16 ? sizeof(W) * K : 16) Vec {
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
__device__ __forceinline__ int64_t cidx(int64_t b, int64_t k, int64_t n, int64_t d, int64_t nch, int64_t N, int64_t D) {
  return ((b * nch + k) * N + n) * D + d;
}

// ---------------------------------------------------------------------------------------------------------------
// Tile staging shared by the kernels, in two steps. load_tile copies the next tile's inputs, still in the storage
// dtype, into a raw buffer in shared memory (Raw) with cp.async (16-byte pieces, no registers involved, so nothing
// waits for them until the next commit); commit, once the previous tile's readers are done, converts them into the
// arrays the arithmetic reads. Shapes the 16-byte copies cannot serve (D or N not a multiple of 16 bytes, N below
// NMAX, unaligned pointers) take a scalar path that fills the same buffer with plain loads and stores.
// Thread tid converts the (t, channel) elements t = tid / 32 + r * G, channel lane (r < RW), so every index below is
// a compile-time offset from its own.
//   sDU[t][lane] = {d', d' u} (0 on masked / padding steps).
//   sBC[t][w] = {B_n, C_n for the NPT states n of warp w} (0 beyond N and on padding rows): one vector load per
//   warp and step.
//   With DY, one array each in Grad (a warp reads a value of 32 channels as one 128-byte wavefront, and each loop
//   loads only what it uses): y0[t][lane] = dy0 = dy silu(z), u, gz = dz factor (dz = y0 * gz), gd = dd'/d delta;
//   sM[t] = step is real.
//   With ZY (the forward's y pass) nothing more is staged: commit hands silu(z) (1 without z, 0 on masked steps)
//   and u of the thread's own elements back in registers, and the same thread writes their y after the tile.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename T, int NMAX, int NPT, bool C, bool DY, bool ZY>
struct Stage {
  using W = typename Compute<T>::type;
  static constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tiling<W, NPT>::TT;
  static constexpr int RW = (TT * 32 + NT - 1) / NT;    // (t, channel) elements per thread
  static constexpr int RB = (TT * NMAX + NT - 1) / NT;  // B / C elements per thread
  static constexpr int BCW = C ? 2 * NPT : NPT;         // values per (t, warp) in sBC
  using DU = Vec<W, 2>;
  using BC = Vec<W, BCW>;
  // Raw arrays: delta, u, then z (DY or ZY), then dy (DY); B, then C.
  static constexpr int NA = 2 + (DY || ZY ? 1 : 0) + (DY ? 1 : 0), NB = C ? 2 : 1;
  static constexpr int VE = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte copy
  static constexpr int CU = 32 / VE, BU = NMAX / VE;           // copies per row of 32 channels / of B
  static constexpr int UA = TT * CU, UNITS = NA * UA + NB * TT * BU, RU = (UNITS + NT - 1) / NT;
  static constexpr int TG = DY ? TT : 1;
  struct Grad {
    W y0[TG][32], u[TG][32], gz[TG][32], gd[TG][32];
  };
  struct alignas(16) Raw {
    T x[NA][TT][32];
    T bc[NB][TT][NMAX];
    unsigned char m[TT];  // step t is real: inside the chunk and not masked
  };

  int64_t ebase, bbase;  // element offsets of (b, t = 0, channel d0) and of (b, t = 0) in B / C
  int d0;                // the block's first channel
  bool vec;              // the 16-byte copies serve this shape (uniform over the grid)
  // The 16-byte path: unit r of this thread copies from src[r] + t0 * stride[r] (stride D or N), when on[r].
  const T* src[BU >= 1 ? RU : 1];
  int stride[BU >= 1 ? RU : 1];
  bool on[BU >= 1 ? RU : 1];

  __device__ __forceinline__ static void clear_padding(BC (*sBC)[G]) {  // states n >= N: zero once
    W* s = reinterpret_cast<W*>(sBC);
    for (int i = threadIdx.x; i < TT * G * BCW; i += NT) s[i] = W(0);
  }
  __device__ __forceinline__ static W cvt(T v) { return load(&v, 0); }
  // Step of this thread's element r (its channel is lane). ZY gives warp grp the RW consecutive steps grp RW .. so
  // the y partials of RW steps travel as one vector; the other passes interleave the warps (t = grp + r G).
  __device__ __forceinline__ static int row(int grp, int r) { return ZY ? grp * RW + r : grp + r * G; }
  __device__ __forceinline__ static const T* array(const SelectiveScanParams& p, int a) {
    return static_cast<const T*>(a == 0 ? p.delta : a == 1 ? p.u : a == 2 ? p.z : p.dy);
  }
  // Unit u of the 16-byte copies: raw array a (NA + q for B / C), row t, piece c.
  __device__ __forceinline__ static void unit(int u, int& a, int& t, int& c) {
    if (u < NA * UA) {
      a = u / UA, t = u % UA / CU, c = u % CU;
    } else {
      const int v = u - NA * UA;
      a = NA + v / (TT * BU), t = v % (TT * BU) / BU, c = v % BU;
    }
  }

  // Offsets and source pointers computed once and kept in registers (recomputed per tile, the compiler re-reads
  // blockIdx and the kernel parameters and redoes the 64-bit arithmetic).
  __device__ __forceinline__ void init(const SelectiveScanParams& p, int64_t b, int64_t first) {
    ebase = b * p.L * p.D + first;
    bbase = b * p.L * p.N;
    d0 = static_cast<int>(first);
    asm volatile("" : "+l"(ebase), "+l"(bbase), "+r"(d0));
    bool ok = BU >= 1 && p.D % VE == 0 && p.N == NMAX && aligned16(p.delta) && aligned16(p.u) && aligned16(p.Bm);
    if (DY || ZY) ok = ok && (p.z == nullptr || aligned16(p.z));
    if (DY) ok = ok && aligned16(p.dy);
    if (C) ok = ok && aligned16(p.Cm);
    vec = ok;
    if constexpr (BU >= 1) {
#pragma unroll
      for (int r = 0; r < RU; ++r) {
        int a, t, c;
        unit(threadIdx.x + r * NT, a, t, c);
        const bool x = a < NA;
        const T* base = x ? array(p, a) : static_cast<const T*>(a == NA ? p.Bm : p.Cm);
        stride[r] = static_cast<int>(x ? p.D : p.N);
        on[r] = ok && threadIdx.x + r * NT < UNITS && (x ? d0 + c * VE < p.D && base != nullptr : true);
        src[r] = on[r] ? base + (x ? ebase : bbase) + static_cast<int64_t>(t) * stride[r] + c * VE : nullptr;
        asm volatile("" : "+l"(src[r]));
      }
    }
  }

  // Start copying tile [t0, t0 + len) into raw; the caller has made sure nobody still reads raw. FULL: the caller
  // knows that len == TT, and no row test is left.
  template <bool FULL = false>
  __device__ __forceinline__ void load_tile(const SelectiveScanParams& p, Raw& raw, int64_t t0, int len) {
    if (FULL) len = TT;
    const int tid = threadIdx.x;
    if (tid < TT) {  // the step flags: plain stores, seen by everyone after the barrier before commit
      bool real = tid < len;
      if (p.mask != nullptr) real = real && mask_real(p.mask, p.mask_dtype, blockIdx.z * p.L + t0 + tid);
      raw.m[tid] = real;
    }
    const int64_t D = p.D, N = p.N;
    if constexpr (BU >= 1) {
      if (vec) {
#pragma unroll
        for (int r = 0; r < RU; ++r) {
          int a, t, c;
          unit(tid + r * NT, a, t, c);
          if (on[r] && t < len) {
            T* dst = a < NA ? &raw.x[a][t][c * VE] : &raw.bc[a - NA][t][c * VE];
            cp_async16(dst, src[r] + static_cast<int64_t>(static_cast<int>(t0)) * stride[r]);
          }
        }
        cp_async_commit();
        return;
      }
    }
    const int grp = tid >> 5, lane = tid & 31;
    const bool active = d0 + lane < D;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int t = grp + r * G;
      if (t < TT && t < len && active) {
#pragma unroll
        for (int a = 0; a < NA; ++a)
          if (a != 2 || p.z != nullptr) raw.x[a][t][lane] = array(p, a)[ebase + (t0 + t) * D + lane];
      }
    }
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT, t = i / NMAX, n = i % NMAX;
      if (i < TT * NMAX && t < len && n < N) {
        raw.bc[0][t][n] = static_cast<const T*>(p.Bm)[bbase + (t0 + t) * N + n];
        if (C) raw.bc[NB - 1][t][n] = static_cast<const T*>(p.Cm)[bbase + (t0 + t) * N + n];
      }
    }
  }
  // Before the __syncthreads that precedes commit: this thread's copies have landed.
  __device__ __forceinline__ void wait() const {
    if (vec) cp_async_wait_all();
  }

  // Convert the raw tile. Branch-free: every value is computed from whatever raw holds (rows past len, lanes past D
  // and the z array when there is none were not loaded) and the step flag selects 0 where the step is not real.
  // FULL as in load_tile. ZY: silu(z) and u of element r go to zf_out[r], u_out[r].
  template <bool FULL = false>
  __device__ __forceinline__ void commit(const SelectiveScanParams& p, const Raw& raw, bool active, int len, W bias,
                                         DU (*sDU)[32], BC (*sBC)[G], Grad* sGr, W* zf_out, W* u_out, bool* sM) const {
    if (FULL) len = TT;
    const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
    const bool has_z = (DY || ZY) && p.z != nullptr, softplus = p.delta_softplus;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int t = row(grp, r);
      if (RW * G > TT && t >= TT) continue;
      const bool ok = active && raw.m[t];
      const int e = ZY ? t * 32 + lane : tid + r * NT;  // [t][lane], a compile-time offset from the thread's first
      const W x = cvt(raw.x[0][t][lane]) + bias;
      W sp, dsp;
      softplus_(x, sp, dsp);
      const W dt = ok ? (softplus ? sp : x) : W(0);
      const W u = ok ? cvt(raw.x[1][t][lane]) : W(0);
      W zf = W(1), s = W(1), zv = W(0);  // silu(z) = z s, s = sigmoid(z); 1 without z
      if constexpr (DY || ZY) {
        zv = cvt(raw.x[2][t][lane]);
        const W sg = sigmoid_(zv);
        s = has_z ? sg : W(1);
        zf = has_z ? zv * sg : W(1);
      }
      DU du;
      du.v[0] = dt;
      du.v[1] = dt * u;
      if constexpr (DY) {
        const W gyv = cvt(raw.x[NA - 1][t][lane]);
        (&sGr->gz[0][0])[e] = ok && has_z ? gyv * s * (W(1) + zv * (W(1) - s)) : W(0);  // the dz factor
        (&sGr->gd[0][0])[e] = ok ? (softplus ? dsp : W(1)) : W(0);
        (&sGr->y0[0][0])[e] = ok ? gyv * zf : W(0);  // dy0 = dy silu(z)
        (&sGr->u[0][0])[e] = u;
      }
      (&sDU[0][0])[e] = du;
      if constexpr (ZY) {
        zf_out[r] = ok ? zf : W(0);
        u_out[r] = u;
      }
    }
    if (DY && tid < TT) sM[tid] = raw.m[tid];
    W* s = reinterpret_cast<W*>(sBC);
    const int N = static_cast<int>(p.N);
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT, t = i / NMAX, n = i % NMAX;
      if ((RB * NT == TT * NMAX || i < TT * NMAX) && n < N) {
        const int o = (t * G + n / NPT) * BCW + n % NPT;
        const bool in = t < len;
        s[o] = in ? cvt(raw.bc[0][t][n]) : W(0);
        if (C) s[o + NPT] = in ? cvt(raw.bc[NB - 1][t][n]) : W(0);
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
// Dynamic shared memory (Y): sYv [G][TT / RW][32] vectors of RW steps, the per-warp partial sums of C h.
// Blocks per SM the forward is compiled for: at N = 16 the grid of bf16 B=8 D=1536 is 384 blocks, so 3 per SM run
// it in one wave, and the compiler must not take more registers than that allows.
template <typename W, int NMAX>
constexpr int fwd_min_blocks() {
  return sizeof(W) == 4 && NMAX == 16 ? 3 : 1;
}
template <typename T, int NMAX, int NPT, Pass PASS>
__global__ void __launch_bounds__(NMAX / NPT * 32, (fwd_min_blocks<typename Compute<T>::type, NMAX>()))
    scan_fwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* H0,
                    typename Compute<T>::type* out0, typename Compute<T>::type* out1,
                    typename Compute<T>::type* sumdt) {
  using W = typename Compute<T>::type;
  constexpr bool kC = PASS == Pass::Y || PASS == Pass::LocalGrad;
  constexpr bool kDY = PASS == Pass::LocalGrad;
  constexpr bool kY = PASS == Pass::Y;
  using St = Stage<T, NMAX, NPT, kC, kDY, kY>;
  constexpr int G = St::G, TT = St::TT, RW = St::RW, TP = TT / RW;
  using YV = Vec<W, RW>;  // RW steps of the y partials (Y)
  __shared__ typename St::DU sDU[TT][32];
  __shared__ typename St::BC sBC[TT][G];
  __shared__ typename St::Grad sGr;
  __shared__ bool sM[kDY ? TT : 1];
  __shared__ typename St::Raw raw;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  YV* sYv = reinterpret_cast<YV*>(smem_raw);

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
      if (H0)
        h[j] = H0[cidx(b, k, n, d, nch, N, D)];
      else if (init)
        h[j] = init[(b * D + d) * N + n];
    }
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sBC);
  W sdt = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  St st;
  st.init(p, b, static_cast<int64_t>(blockIdx.x) * 32);
  // The tile states of this thread's states, [(b * nT + tile) * N + n] * D + d: advanced a tile at a time.
  W* hsp = out0 != nullptr ? out0 + (b * nT * N + grp * NPT) * D + d + t_begin / TT * N * D : nullptr;
  // y row t0 + grp RW, channel d: advanced a tile at a time.
  T* yrow = kY ? static_cast<T*>(p.y) + st.ebase + (t_begin + grp * RW) * D + lane : nullptr;
  st.load_tile(p, raw, t_begin, static_cast<int>(t_end - t_begin < TT ? t_end - t_begin : TT));
  // One tile. FULL: len == TT (every tile but a chunk's partial last one), known at compile time, so the full tiles
  // carry no row tests and no 64-bit length arithmetic.
  auto tile = [&](auto full, int64_t t0) {
    constexpr bool FULL = decltype(full)::value;
    const int len = FULL ? TT : static_cast<int>(t_end - t0);
    if ((PASS == Pass::Checkpoint || (PASS == Pass::Y && out0 != nullptr)) && active) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = grp * NPT + j;
        if (n < N) hsp[j * D] = h[j];
      }
      hsp += N * D;
    }
    st.wait();
    __syncthreads();                     // the tile's raw inputs have landed; the previous tile's readers are done
    W zr[kY ? RW : 1], ur[kY ? RW : 1];  // silu(z) and u of this thread's (t, channel) elements
    st.template commit<FULL>(p, raw, active, len, bias, sDU, sBC, &sGr, zr, ur, sM);
    __syncthreads();
    const int64_t t1 = t0 + TT;
    if (t1 + TT <= t_end)
      st.template load_tile<true>(p, raw, t1, TT);
    else if (t1 < t_end)
      st.load_tile(p, raw, t1, static_cast<int>(t_end - t1));
    // The per-warp partials of y: stored 4 steps at a time (as RW-step vectors). Stored step by step, they keep the
    // compiler from loading the next steps' inputs before each store (it cannot tell the arrays apart); all 16
    // held to the end of the tile, they take 16 registers during the recurrence.
    [[maybe_unused]] W yacc[kY ? TT : 1];
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const typename St::DU du = sDU[t][lane];
      const typename St::BC bc = sBC[t][grp];
      [[maybe_unused]] W acc = W(0);
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const W a = decay(du.v[0], A2[j]);
        h[j] = a * h[j] + du.v[1] * bc.v[j];
        if constexpr (kY) acc += bc.v[NPT + j] * h[j];
        if constexpr (kDY) {
          Pc[j] *= a;
          Rc[j] += Pc[j] * bc.v[NPT + j] * sGr.y0[kDY ? t : 0][lane];
        }
      }
      if constexpr (kY) {
        yacc[t] = acc;
        constexpr int YS = 4 < TT ? 4 : TT;  // stored YS (or RW if more) steps at a time
        if ((t + 1) % YS == 0) {
#pragma unroll
          for (int q = (t + 1 - YS) / RW; q < (t + 1) / RW; ++q) {
            YV v;
#pragma unroll
            for (int i = 0; i < RW; ++i) v.v[i] = yacc[q * RW + i];
            sYv[(grp * TP + q) * 32 + lane] = v;
          }
        }
      }
      if (PASS == Pass::Local || PASS == Pass::LocalGrad) sdt += du.v[0];
    }
    if constexpr (kY) {
      // Warp grp's partials of steps [q RW, q RW + RW) are at sYv[grp][q][lane]; thread (grp, lane) sums those of
      // its own RW steps in warp order, adds D u and applies silu(z).
      __syncthreads();
      if ((TP == G || grp < TP) && active) {
        W yv[RW];
#pragma unroll
        for (int i = 0; i < RW; ++i) yv[i] = Dd * ur[i];  // masked: silu(z) = 0 makes y = 0
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const YV v = sYv[g * TP * 32 + tid];  // [g][grp][lane]
#pragma unroll
          for (int i = 0; i < RW; ++i) yv[i] += v.v[i];
        }
#pragma unroll
        for (int i = 0; i < RW; ++i)
          if (FULL || grp * RW + i < len) yrow[i * D] = from_compute<T>(yv[i] * zr[i]);
      }
    }
    if constexpr (kY) yrow += TT * D;
  };
  int64_t t0 = t_begin;
  for (; t0 + TT <= t_end; t0 += TT) tile(std::true_type{}, t0);
  if (t0 < t_end) tile(std::false_type{}, t0);
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
// Partial outputs (summed in a fixed order by reduce_bc_kernel and reduce_rows_kernel):
//   pBC [nDb][2][B][N][L]  dB (0) and dC (1) summed over the block's 32 channels (t fastest: a warp's RS steps of
//                          one state are one contiguous store)
//   pA  [B * nch][D][N]     dA;   pDD, pBias [B * nch][D]   dD, dbias
// Per step and state the reverse recurrence needs h_{t-1} and h_t: the tile's states are recomputed from its
// checkpoint into registers (hs, TT x NPT per thread) and the sums over n that du and dd' need are factored:
// du = d' sum_n g B + D dy0 and dd' = sum_n g a h_{t-1} A + u sum_n g B.
// Dynamic shared memory: G * TT * 32 values of W seen as sY, the per-warp partials of y0 (for dz, [G][TT][32]), then
// as sQ, per half tile the per-warp partials {sum g B, sum g a h A} ([G][TT / 2][32] pairs); then sP [G][32][PS]:
// row c holds lane c's dB / dC values of RS steps (2 * NPT per step, one vector store), PS = RS * 2 * NPT + 16 bytes
// keeps the stores and the column sums free of bank conflicts.
// Blocks per SM the backward is compiled for (__launch_bounds__). Left to itself the compiler gives the kernel at
// N = 16 168 registers: one block of 256 threads per SM. Asked for 3 (80 registers, about 80 bytes spilled), all 384
// blocks of bf16 B=8 D=1536 N=16 run at once: 1.57 ms forward+backward against 2.15 ms at 2 blocks of 128 registers
// (H200, before the cp.async staging). With f32 storage the block needs 77 KB of shared memory, so only 2 fit per SM
// whatever the registers; a 128-register build for that case is not measured yet. f64 is for checking, not speed.
template <typename W, int NMAX>
constexpr int bwd_min_blocks() {
  return sizeof(W) == 4 && NMAX == 16 ? 3 : sizeof(W) == 4 && NMAX == 32 ? 2 : 1;
}
template <typename T, int NMAX, int NPT, int MINB>
__global__ void __launch_bounds__(NMAX / NPT * 32, MINB)
    scan_bwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* Hs,
                    const typename Compute<T>::type* Gend, typename Compute<T>::type* pBC,
                    typename Compute<T>::type* pA, typename Compute<T>::type* pDD, typename Compute<T>::type* pBias) {
  using W = typename Compute<T>::type;
  using St = Stage<T, NMAX, NPT, true, true, false>;
  using DU = typename St::DU;
  using BC = typename St::BC;
  constexpr int G = St::G, TT = St::TT, NT = St::NT, RS = Tiling<W, NPT>::RS, V = 2 * NPT;
  constexpr int TH = TT / 2, RH = (TH * 32 + NT - 1) / NT;
  constexpr int PS = RS * V + 16 / static_cast<int>(sizeof(W));
  static_assert(TH % RS == 0, "a dB / dC staging group must not straddle two half tiles");
  __shared__ DU sDU[TT][32];
  __shared__ BC sBC[TT][G];
  __shared__ typename St::Grad sGr;
  __shared__ bool sM[TT];
  __shared__ typename St::Raw raw;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  W* sY = reinterpret_cast<W*>(smem_raw);
  Vec<W, 2>* sQ = reinterpret_cast<Vec<W, 2>*>(smem_raw);
  W* sPw = sY + G * TT * 32 + (threadIdx.x >> 5) * (32 * PS);  // this warp's dB / dC staging

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y, b = blockIdx.z;
  const bool active = d < D;
  const W* A = static_cast<const W*>(p.A);
  const W* dlast = static_cast<const W*>(p.dlast_state);

  W A2[NPT], g[NPT], dA_acc[NPT], hn[NPT];  // A2 = A log2 e
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    const int n = grp * NPT + j;
    const bool on = active && n < N;
    A2[j] = on ? A[d * N + n] * W(kLog2e) : W(0);
    g[j] = W(0);
    if (on) {
      if (Gend)
        g[j] = Gend[cidx(b, k, n, d, nch, N, D)];
      else if (dlast)
        g[j] = dlast[(b * D + d) * N + n];
    }
    dA_acc[j] = W(0);
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sBC);
  W dD_acc = W(0), dbias_acc = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  const int64_t t_last = t_begin + (t_end - 1 - t_begin) / TT * TT;  // tiles before it are full
  int64_t hoff = (b * nT * N + grp * NPT) * D + d;                   // tile states: + (tile * N + j) * D
  int64_t pbc_off = (static_cast<int64_t>(blockIdx.x) * 2 * p.B + b) * N * L;
  asm volatile("" : "+l"(hoff));
  auto load_state = [&](int64_t t0) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      hn[j] = (active && n < N) ? Hs[hoff + (t0 / TT * N + j) * D] : W(0);
    }
  };
  St st;
  st.init(p, b, static_cast<int64_t>(blockIdx.x) * 32);
  st.load_tile(p, raw, t_last, static_cast<int>(t_end - t_last));
  load_state(t_last);
  for (int64_t t0 = t_last; t0 >= t_begin; t0 -= TT) {
    const int len = static_cast<int>(t_end - t0 < TT ? t_end - t0 : TT);
    W hin[NPT];
#pragma unroll
    for (int j = 0; j < NPT; ++j) hin[j] = hn[j];
    st.wait();
    __syncthreads();  // the tile's raw inputs have landed; the previous tile's readers are done
    st.commit(p, raw, active, len, bias, sDU, sBC, &sGr, nullptr, nullptr, sM);  // ZY is off
    __syncthreads();
    const int64_t orow = st.ebase + static_cast<int64_t>(static_cast<int>(t0) + grp) * D + lane;  // (t0 + grp, d)
    if (t0 - TT >= t_begin) {
      st.load_tile(p, raw, t0 - TT, TT);
      load_state(t0 - TT);
    }

    // Recompute the tile's states from its checkpoint: hs[t] = h_{t0+t}; per-warp partials of y0 for dz.
    W hs[TT][NPT];
    {
      W h[NPT];
#pragma unroll
      for (int j = 0; j < NPT; ++j) h[j] = hin[j];
#pragma unroll
      for (int t = 0; t < TT; ++t) {
        const DU du = sDU[t][lane];
        const BC bc = sBC[t][grp];
        W acc = W(0);
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          h[j] = decay(du.v[0], A2[j]) * h[j] + du.v[1] * bc.v[j];
          hs[t][j] = h[j];
          acc += bc.v[NPT + j] * h[j];
        }
        if (p.z) sY[(grp * TT + t) * 32 + lane] = acc;
      }
    }
    if (p.z) {
      __syncthreads();
      T* dzrow = static_cast<T*>(p.dz) + orow;  // row t0 + grp, channel d
#pragma unroll
      for (int r = 0; r < St::RW; ++r) {
        const int t = grp + r * G;
        if ((St::RW * G == TT || t < TT) && t < len && active) {
          const int e = tid + r * NT;     // t * 32 + lane
          W y0 = Dd * (&sGr.u[0][0])[e];  // masked: u = 0 and the dz factor is 0
#pragma unroll
          for (int q = 0; q < G; ++q) y0 += sY[q * TT * 32 + e];
          dzrow[static_cast<int64_t>(r * G) * D] = from_compute<T>(y0 * (&sGr.gz[0][0])[e]);
        }
      }
      __syncthreads();  // the y0 partials' space holds the du / dd' partials next
    }

    // Reverse recurrence over the tile, second half first; g = dLoss/dh_t.
#pragma unroll
    for (int half = 1; half >= 0; --half) {
#pragma unroll
      for (int tt = TH - 1; tt >= 0; --tt) {
        const int t = half * TH + tt;
        const DU du = sDU[t][lane];  // d', d' u
        const W y0 = sGr.y0[t][lane];
        const BC bc = sBC[t][grp];
        const int s = t % RS;
        W sgB = W(0), sgA = W(0);
        Vec<W, V> pv;
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          const W a = decay(du.v[0], A2[j]);
          const W hprev = t > 0 ? hs[t > 0 ? t - 1 : 0][j] : hin[j];
          pv.v[NPT + j] = y0 * hs[t][j];  // dC_t = dy0 h_t
          g[j] += bc.v[NPT + j] * y0;
          pv.v[j] = g[j] * du.v[1];  // dB_t = g d' u
          sgB += g[j] * bc.v[j];
          const W ga = g[j] * a;
          const W gah = ga * hprev;
          dA_acc[j] += gah * du.v[0];
          sgA += gah * A2[j];  // times ln 2 at the output: sum_n g a h A
          g[j] = ga;
        }
        *reinterpret_cast<Vec<W, V>*>(sPw + lane * PS + s * V) = pv;
        Vec<W, 2> q2;
        q2.v[0] = sgB;
        q2.v[1] = sgA;
        sQ[(grp * TH + tt) * 32 + lane] = q2;
        if (s == 0) {  // steps t .. t + RS - 1 are staged: lane sl * V + q sums value q of step t + sl
          __syncwarp();
          if (lane < RS * V) {
            W part[4] = {W(0), W(0), W(0), W(0)};  // 4 chains of 8 adds, not one of 32
#pragma unroll 2
            for (int c = 0; c < 32; c += 4) {
#pragma unroll
              for (int i = 0; i < 4; ++i) part[i] += sPw[(c + i) * PS + lane];
            }
            const W tot = (part[0] + part[1]) + (part[2] + part[3]);
            const int sl = lane / V, q = lane % V, n = grp * NPT + q % NPT;
            const int64_t ta = t0 + t + sl;
            if (t + sl < len && n < N) pBC[pbc_off + (q / NPT) * p.B * N * L + n * L + ta] = tot;
          }
          __syncwarp();
        }
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < RH; ++r) {
        const int tl = grp + r * G, t = half * TH + tl;
        if ((RH * G == TH || tl < TH) && t < len && active) {
          // Steps that are not real have d' = u = dy0 = 0 and a zero dd'/d delta factor; the select keeps them 0
          // whatever the partials hold.
          const int e = tid + r * NT;  // tl * 32 + lane
          const int f = half * TH * 32 + e;
          const W dt = (&sDU[0][0])[f].v[0], y0 = (&sGr.y0[0][0])[f], u = (&sGr.u[0][0])[f];
          W sB = W(0), sA = W(0);
#pragma unroll
          for (int q = 0; q < G; ++q) {
            const Vec<W, 2> v = sQ[q * TH * 32 + e];
            sB += v.v[0];
            sA += v.v[1];
          }
          const bool real = sM[t];
          const W duv = real ? Dd * y0 + dt * sB : W(0);
          const W ddv = real ? (sA * W(kLn2) + u * sB) * (&sGr.gd[0][0])[f] : W(0);
          dD_acc += y0 * u;
          dbias_acc += ddv;
          const int64_t o = orow + static_cast<int64_t>(half * TH + r * G) * D;  // row t, channel d
          static_cast<T*>(p.du)[o] = from_compute<T>(duv);
          static_cast<T*>(p.ddelta)[o] = from_compute<T>(ddv);
        }
      }
      if (half == 1) __syncthreads();  // the first half's partials overwrite these; the next tile starts with one
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
  sY[G * 32 + grp * 32 + lane] = dbias_acc;
  __syncthreads();
  if (grp == 0 && active) {
    W a = W(0), c = W(0);
#pragma unroll
    for (int q = 0; q < G; ++q) {
      a += sY[q * 32 + lane];
      c += sY[G * 32 + q * 32 + lane];
    }
    pDD[(b * nch + k) * D + d] = a;
    pBias[(b * nch + k) * D + d] = c;
  }
}

// out[i] = sum_r in[r * M + i] in order r = 0, 1, ...
template <typename W>
__global__ void reduce_rows_kernel(const W* in, int64_t R, int64_t M, W* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += in[r * M + i];
    out[i] = s;
  }
}

// dB and dC from the backward's per-block partials pBC [R][2][B][N][L]: thread i = ((c * B + b) * N + n) * L + t sums
// its R rows in order (reads coalesced along t) and writes dB / dC [B][L][N].
template <typename W>
__global__ void reduce_bc_kernel(const W* in, int64_t R, int64_t B, int64_t L, int64_t N, W* dB, W* dC) {
  const int64_t M = 2 * B * N * L;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += in[r * M + i];
    const int64_t t = i % L, n = i / L % N, cb = i / (L * N), b = cb % B;
    (cb < B ? dB : dC)[(b * L + t) * N + n] = s;
  }
}

template <typename W>
void reduce_rows(const W* in, int64_t R, int64_t M, W* out) {
  reduce_rows_kernel<W><<<cuda::grid_for(M, 256), 256, 0, cuda::stream()>>>(in, R, M, out);
  MT_CUDA_CHECK_LAUNCH();
}

// Call f(std::integral_constant<int, NMAX>) with the smallest NMAX in {4, 8, 16, 32, 64} that holds N.
template <typename F>
void dispatch_nmax(int64_t N, F&& f) {
  if (N <= 4)
    f(std::integral_constant<int, 4>{});
  else if (N <= 8)
    f(std::integral_constant<int, 8>{});
  else if (N <= 16)
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
  constexpr int PS = RS * 2 * NPT + 16 / static_cast<int>(sizeof(W));
  const auto chunks = chunking(p, NT, TT);
  const int64_t CL = chunks.first, nch = chunks.second;
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
  const size_t smem = sizeof(W) * (static_cast<size_t>(G) * TT * 32 + static_cast<size_t>(G) * 32 * PS);
  static bool smem_set = false;  // one per template instantiation
  constexpr int kMinBlocks = bwd_min_blocks<W, NMAX>();
  allow_smem(scan_bwd_kernel<T, NMAX, NPT, kMinBlocks>, smem, smem_set);
  scan_bwd_kernel<T, NMAX, NPT, kMinBlocks>
      <<<grid, NT, smem, cuda::stream()>>>(p, CL, nch, Hs, Rb, pBC, pA, pDD, pBias);
  MT_CUDA_CHECK_LAUNCH();
  reduce_bc_kernel<W><<<cuda::grid_for(2 * B * L * N, 256), 256, 0, cuda::stream()>>>(
      pBC, nDb, B, L, N, static_cast<W*>(p.dBm), static_cast<W*>(p.dCm));
  MT_CUDA_CHECK_LAUNCH();
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
