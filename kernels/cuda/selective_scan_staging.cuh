// CUDA selective scan (math in kernels/selective_scan.h): what the forward (selective_scan_fwd.cu) and the backward
// (selective_scan_bwd.cu) share. The per-architecture tuning, the math helpers, the tile staging and the host-side
// chunking; the forward-direction kernel, whose passes both use, is in selective_scan_fwd.cuh.
//
// Work split. A block owns 32 channels (one per lane) of one batch row and one chunk of timesteps; its warps split
// the N states, NPT per thread (warp w owns states NPT w .. NPT w + NPT - 1; Tuning::states_per_thread), so a block
// has NMAX / NPT warps and every thread keeps NPT states in registers. Time is walked in tiles of TT steps
// (Tuning::tile_steps): the block stages the tile's d' = softplus(delta + bias), u, B, C (and dy, z in the backward)
// in shared memory, each thread runs its NPT recurrences over the tile, and the sums over n (y, du, d delta) meet in
// shared memory. The next tile's global loads are issued before the current tile's arithmetic, so their latency
// hides behind it. Masked steps become d' = 0 in the staged tile (a = 1, b = 0: the state passes through), and so do
// the padding steps of a partial last tile, which keeps the inner loops free of branches. A document start
// (p.reset) stages the decay's d' as kResetDt, so a = exp(kResetDt A) flushes to 0 and the state restarts there; the
// same value in a chunk's sum of d' makes the chunk's P zero, and in the backward it zeroes g through a = 0 (the
// d' factor of dA meets g a h = 0). The real d' of such a step stays in d' u and, for du, in Grad::dt.
//
// Chunks. The recurrence h_t = a_t h_{t-1} + b_t is linear in h, so a chunk maps its entering state H to P H + S with
// P = exp(A * sum d') and S its end state from zero; backwards, a chunk maps the gradient leaving it, G, to P G + R.
// When B * D is too small to fill the GPU (B = 1 at long L), the sequence is cut into chunks: a local pass computes
// S (and R), scan_combine_kernel walks the chunks of each (b, d, n) and turns them into the state entering / the
// gradient leaving every chunk, and the chunks then run independently. With enough channels there is one chunk and
// no local pass (bf16 B=8 L=2048 D=1536 N=16: one pass of N exponentials per channel and step in the forward).
//
// Instruction issue and shared-memory traffic bound these kernels, not DRAM bandwidth (the forward uses about 18% of
// the copy rate): the shared layouts give one vector load per step for {d', d' u} and for a warp's {B, C}, the
// backward's other per-(t, channel) values sit in arrays of their own so each loop loads only what it uses (one
// 128-byte wavefront per warp and value), every staging index is a compile-time offset from threadIdx.x, and the
// next tile's inputs travel by cp.async, so no register waits for them.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/detail/time_map.h"
#include "kernels/selective_scan.h"

namespace mt::kernels {

namespace {

using mt::cuda::Compute;
using mt::cuda::from_compute;
using mt::cuda::load;

// ---------------------------------------------------------------------------------------------------------------
// Tuning for sm_90 (H100 / H200): the architecture the build targets (CMAKE_CUDA_ARCHITECTURES 90) and the one the
// choices below were measured on. Everything architecture-specific is here: the tile length, the states per thread,
// the blocks per SM each kernel is compiled for (the __launch_bounds__ minimum, which caps its registers) and when a
// sequence is cut into chunks; the shared-memory sizes follow from the tile length and the block shape. Another
// architecture gets a struct of its own, selected by `Tuning`.
struct Sm90Tuning {
  // Timesteps per tile (the backward's checkpoint stride); f64 halves it to keep shared memory in bounds.
  template <typename W>
  static constexpr int tile_steps() {
    return sizeof(W) == 8 ? 8 : 16;
  }
  // States per thread under a bound of nmax states: 2 up to 16 (twice the warps to hide latency with), 4 above
  // (blocks of at most 512 threads).
  static constexpr int states_per_thread(int nmax) { return nmax <= 16 ? 2 : 4; }
  // Steps per warp reduction of dB / dC in the backward (2 * npt values per step; 32 in all for f32).
  template <typename W>
  static constexpr int bc_reduce_steps(int npt) {
    return (sizeof(W) == 8 ? 8 : 16) / npt;
  }
  // Forward blocks per SM: at N = 16 the grid of bf16 B=8 D=1536 is 384 blocks, so 3 per SM run it in one wave, and
  // the compiler must not take more registers than that allows.
  template <typename W>
  static constexpr int fwd_min_blocks(int nmax) {
    return sizeof(W) == 4 && nmax == 16 ? 3 : 1;
  }
  // Backward blocks per SM. Left to itself the compiler gives the kernel at N = 16 168 registers, one block of 256
  // threads per SM; at 3 (80 registers, about 80 bytes spilled) all 384 blocks of bf16 B=8 D=1536 N=16 run at once,
  // which is faster than 2 blocks of 128 registers. With f32 storage the block needs 77 KB of shared memory, so only
  // 2 fit per SM whatever the registers. f64 is for checking, not speed.
  template <typename W>
  static constexpr int bwd_min_blocks(int nmax) {
    return sizeof(W) == 4 && nmax == 16 ? 3 : sizeof(W) == 4 && nmax == 32 ? 2 : 1;
  }
  // Chunks along L: one unless the (b, channel-block) blocks of one chunk give fewer than chunk_min_threads
  // threads, then as many as reach it, each at least chunk_min_tiles tiles long. Each chunk beyond one costs a local
  // pass (the forward's work again), so the bar is the fewest threads that keep the GPU busy: bf16 B=1 L=65536
  // D=1536 N=16 forward takes 7.6 ms at 32768 (3 chunks), 2.9 ms at 98304 (8 chunks), while B=8 L=2048 (98304
  // threads in one chunk) would lose 0.2 ms to a second chunk.
  static constexpr int64_t chunk_min_threads = 98304;
  static constexpr int chunk_min_tiles = 4;
};
using Tuning = Sm90Tuning;

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

// The staged d' of a step that starts a document: exp(kResetDt * A) is 0 for any A below -1e-34 (f32, after ftz) or
// -1e-298 (f64), and a chunk's sum of d' stays an overflow to +inf at worst, whose P is 0 as well.
template <typename W>
__device__ __forceinline__ W reset_dt() {
  return sizeof(W) == 8 ? W(1e300) : W(1e35f);
}

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

// The scans of one launch: one (NDIR = 1), or both directions of a bidirectional layer (NDIR = 2, of equal B, L, D,
// N and dtype). The launch's batch rows are dirs.p[0]'s B rows, then dirs.p[1]'s.
template <int NDIR>
struct ScanDirs {
  SelectiveScanParams p[NDIR];
};

// f(p, b) for the scan and batch row of launch row blockIdx.z. Each direction is its own inlined call with a
// constant index, so its parameters stay loads from the kernel's constant bank.
template <int NDIR, typename F>
__device__ __forceinline__ void for_direction(const ScanDirs<NDIR>& dirs, F&& f) {
  const int64_t w = blockIdx.z, B = dirs.p[0].B;
  if (NDIR == 1 || w < B)
    f(dirs.p[0], w);
  else
    f(dirs.p[NDIR - 1], w - B);
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
//   With kWithGrad, one array each in Grad (a warp reads a value of 32 channels as one 128-byte wavefront, and each
//   loop loads only what it uses): y0[t][lane] = dy0 = dy silu(z), u, gz = dz factor (dz = y0 * gz), gd = dd'/d delta,
//   dt = d' (sDU's d' is kResetDt at a document start); sM[t] = step is real.
//   With kYPass (the forward's y pass) nothing more is staged: commit hands silu(z) (1 without z, 0 on masked steps)
//   and u of the thread's own elements back in registers, and the same thread writes their y after the tile.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Stage<T, NMAX, NPT, kWithC, kWithGrad, kYPass>: the flags say what a pass stages. kWithC: C beside B (every pass
// that computes y or its gradient). kWithGrad: the backward's per-(t, channel) inputs (z, dy) and the Grad arrays.
// kYPass: the forward's y pass (z staged, silu(z) and u handed back in registers).
template <typename T, int NMAX, int NPT, bool kWithC, bool kWithGrad, bool kYPass>
struct Stage {
  using W = typename Compute<T>::type;
  static constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tuning::tile_steps<W>();
  static constexpr int RW = (TT * 32 + NT - 1) / NT;    // (t, channel) elements per thread
  static constexpr int RB = (TT * NMAX + NT - 1) / NT;  // B / C elements per thread
  static constexpr int BCW = kWithC ? 2 * NPT : NPT;    // values per (t, warp) in sBC
  using DU = Vec<W, 2>;
  using BC = Vec<W, BCW>;
  // Raw arrays: delta, u, then z (kWithGrad or kYPass), then dy (kWithGrad); B, then C.
  static constexpr int NA = 2 + (kWithGrad || kYPass ? 1 : 0) + (kWithGrad ? 1 : 0), NB = kWithC ? 2 : 1;
  static constexpr int VE = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte copy
  static constexpr int CU = 32 / VE, BU = NMAX / VE;           // copies per row of 32 channels / of B
  static constexpr int UA = TT * CU, UNITS = NA * UA + NB * TT * BU, RU = (UNITS + NT - 1) / NT;
  static constexpr int TG = kWithGrad ? TT : 1;
  struct Grad {
    W y0[TG][32], u[TG][32], gz[TG][32], gd[TG][32], dt[TG][32];
  };
  struct alignas(16) Raw {
    T x[NA][TT][32];
    T bc[NB][TT][NMAX];
    unsigned char m[TT];  // step t is real: inside the chunk and not masked
    unsigned char r[TT];  // a document starts at step t (p.reset)
  };

  // Element offsets of (b, step 0, channel d0) and of (b, step 0) in B / C, and the signed distance between two
  // steps' rows (D and N, or -D and -N for a reverse scan, whose step s is position L-1-s: the inputs are read in
  // place, backwards, with no flipped copies).
  int64_t ebase, bbase;
  int erow, brow;
  int d0;    // the block's first channel
  bool vec;  // the 16-byte copies serve this shape (uniform over the grid)
  // The 16-byte path: unit r of this thread copies from src[r] + t0 * stride[r] (stride D or N), when on[r].
  const T* src[BU >= 1 ? RU : 1];
  int stride[BU >= 1 ? RU : 1];
  bool on[BU >= 1 ? RU : 1];

  __device__ __forceinline__ static void clear_padding(BC (*sBC)[G]) {  // states n >= N: zero once
    W* s = reinterpret_cast<W*>(sBC);
    for (int i = threadIdx.x; i < TT * G * BCW; i += NT) s[i] = W(0);
  }
  __device__ __forceinline__ static W cvt(T v) { return load(&v, 0); }
  // Step of this thread's element r (its channel is lane). kYPass gives warp grp the RW consecutive steps grp RW .. so
  // the y partials of RW steps travel as one vector; the other passes interleave the warps (t = grp + r G).
  __device__ __forceinline__ static int row(int grp, int r) { return kYPass ? grp * RW + r : grp + r * G; }
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
    const int64_t last = p.reverse ? p.L - 1 : 0, bcs = p.bc_stride > 0 ? p.bc_stride : p.N;
    ebase = (b * p.L + last) * p.D + first;
    bbase = (b * p.L + last) * bcs;
    erow = static_cast<int>(p.reverse ? -p.D : p.D);
    brow = static_cast<int>(p.reverse ? -bcs : bcs);
    d0 = static_cast<int>(first);
    asm volatile("" : "+l"(ebase), "+l"(bbase), "+r"(d0), "+r"(erow), "+r"(brow));
    bool ok = BU >= 1 && p.D % VE == 0 && p.N == NMAX && bcs % VE == 0 && aligned16(p.delta) && aligned16(p.u) &&
              aligned16(p.Bm);
    if (kWithGrad || kYPass) ok = ok && (p.z == nullptr || aligned16(p.z));
    if (kWithGrad) ok = ok && aligned16(p.dy);
    if (kWithC) ok = ok && aligned16(p.Cm);
    vec = ok;
    if constexpr (BU >= 1) {
#pragma unroll
      for (int r = 0; r < RU; ++r) {
        int a, t, c;
        unit(threadIdx.x + r * NT, a, t, c);
        const bool x = a < NA;
        const T* base = x ? array(p, a) : static_cast<const T*>(a == NA ? p.Bm : p.Cm);
        stride[r] = x ? erow : brow;
        on[r] = ok && threadIdx.x + r * NT < UNITS && (x ? d0 + c * VE < p.D && base != nullptr : true);
        src[r] = on[r] ? base + (x ? ebase : bbase) + static_cast<int64_t>(t) * stride[r] + c * VE : nullptr;
        asm volatile("" : "+l"(src[r]));
      }
    }
  }

  // Start copying tile [t0, t0 + len) of batch row b into raw; the caller has made sure nobody still reads raw. FULL:
  // the caller knows that len == TT, and no row test is left.
  template <bool FULL = false>
  __device__ __forceinline__ void load_tile(const SelectiveScanParams& p, Raw& raw, int64_t b, int64_t t0, int len) {
    if (FULL) len = TT;
    const int tid = threadIdx.x;
    if (tid < TT) {  // the step flags: plain stores, seen by everyone after the barrier before commit
      const TimeMap walk{p.L, p.reverse, p.reset};  // step s reads position walk.pos(s)
      const int64_t s = t0 + tid;
      bool real = tid < len;
      if (p.mask != nullptr) real = real && mask_real(p.mask, p.mask_dtype, walk.row(b, s));
      raw.m[tid] = real;
      raw.r[tid] = tid < len && walk.starts(b, s);
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
          if (a != 2 || p.z != nullptr) raw.x[a][t][lane] = array(p, a)[ebase + (t0 + t) * erow + lane];
      }
    }
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT, t = i / NMAX, n = i % NMAX;
      if (i < TT * NMAX && t < len && n < N) {
        raw.bc[0][t][n] = static_cast<const T*>(p.Bm)[bbase + (t0 + t) * brow + n];
        if (kWithC) raw.bc[NB - 1][t][n] = static_cast<const T*>(p.Cm)[bbase + (t0 + t) * brow + n];
      }
    }
  }
  // Before the __syncthreads that precedes commit: this thread's copies have landed.
  __device__ __forceinline__ void wait() const {
    if (vec) cp_async_wait_all();
  }

  // Convert the raw tile. Branch-free: every value is computed from whatever raw holds (rows past len, lanes past D
  // and the z array when there is none were not loaded) and the step flag selects 0 where the step is not real.
  // FULL as in load_tile. kYPass: silu(z) and u of element r go to zf_out[r], u_out[r].
  template <bool FULL = false>
  __device__ __forceinline__ void commit(const SelectiveScanParams& p, const Raw& raw, bool active, int len, W bias,
                                         DU (*sDU)[32], BC (*sBC)[G], Grad* sGr, W* zf_out, W* u_out, bool* sM) const {
    if (FULL) len = TT;
    const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
    const bool has_z = (kWithGrad || kYPass) && p.z != nullptr, softplus = p.delta_softplus;
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int t = row(grp, r);
      if (RW * G > TT && t >= TT) continue;
      const bool ok = active && raw.m[t];
      const int e = kYPass ? t * 32 + lane : tid + r * NT;  // [t][lane], a compile-time offset from the thread's first
      const W x = cvt(raw.x[0][t][lane]) + bias;
      W sp, dsp;
      softplus_(x, sp, dsp);
      const W dt = ok ? (softplus ? sp : x) : W(0);
      const W u = ok ? cvt(raw.x[1][t][lane]) : W(0);
      const bool rs = raw.r[t];
      W zf = W(1), s = W(1), zv = W(0);  // silu(z) = z s, s = sigmoid(z); 1 without z
      if constexpr (kWithGrad || kYPass) {
        zv = cvt(raw.x[2][t][lane]);
        const W sg = sigmoid_(zv);
        s = has_z ? sg : W(1);
        zf = has_z ? zv * sg : W(1);
      }
      DU du;
      du.v[0] = rs ? reset_dt<W>() : dt;
      du.v[1] = dt * u;
      if constexpr (kWithGrad) {
        const W gyv = cvt(raw.x[NA - 1][t][lane]);
        (&sGr->gz[0][0])[e] = ok && has_z ? gyv * s * (W(1) + zv * (W(1) - s)) : W(0);  // the dz factor
        (&sGr->gd[0][0])[e] = ok ? (softplus ? dsp : W(1)) : W(0);
        (&sGr->y0[0][0])[e] = ok ? gyv * zf : W(0);  // dy0 = dy silu(z)
        (&sGr->u[0][0])[e] = u;
        (&sGr->dt[0][0])[e] = dt;
      }
      (&sDU[0][0])[e] = du;
      if constexpr (kYPass) {
        zf_out[r] = ok ? zf : W(0);
        u_out[r] = u;
      }
    }
    if (kWithGrad && tid < TT) sM[tid] = raw.m[tid];
    W* s = reinterpret_cast<W*>(sBC);
    const int N = static_cast<int>(p.N);
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int i = tid + r * NT, t = i / NMAX, n = i % NMAX;
      if ((RB * NT == TT * NMAX || i < TT * NMAX) && n < N) {
        const int o = (t * G + n / NPT) * BCW + n % NPT;
        const bool in = t < len;
        s[o] = in ? cvt(raw.bc[0][t][n]) : W(0);
        if (kWithC) s[o + NPT] = in ? cvt(raw.bc[NB - 1][t][n]) : W(0);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Host side.

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
  MT_CHECK_SHAPE(p.bc_stride == 0 || (p.bc_stride >= p.N && p.bc_stride * p.L <= INT32_MAX), what,
                 ": the row stride of Bm and Cm must be 0 or in [N, 2^31 / L], got ", p.bc_stride);
}

// The scans of a two-direction launch must share the sizes and the dtype that shape the grid and the templates.
void check_pair(const SelectiveScanParams& a, const SelectiveScanParams& b, const char* what) {
  MT_CHECK_SHAPE(a.B == b.B && a.L == b.L && a.D == b.D && a.N == b.N && a.dtype == b.dtype, what,
                 ": both directions must have the same B, L, D, N and dtype, got B, L, D, N = ", a.B, ", ", a.L, ", ",
                 a.D, ", ", a.N, " and ", b.B, ", ", b.L, ", ", b.D, ", ", b.N);
  MT_CHECK_SHAPE(a.B * 2 <= 65535, what, ": 2 B must be at most 65535, got B = ", a.B);
}

// Chunks along L (Tuning::chunk_min_threads): {chunk length (a multiple of TT), number of chunks}.
std::pair<int64_t, int64_t> chunking(const SelectiveScanParams& p, int NT, int TT) {
  const int64_t per_chunk = p.B * ((p.D + 31) / 32) * NT;
  int64_t nch = (Tuning::chunk_min_threads + per_chunk - 1) / per_chunk;
  const int64_t min_len = int64_t{Tuning::chunk_min_tiles} * TT;
  nch = std::max<int64_t>(1, std::min<int64_t>(nch, (p.L + min_len - 1) / min_len));
  int64_t CL = (p.L + nch - 1) / nch;
  CL = (CL + TT - 1) / TT * TT;
  return {CL, (p.L + CL - 1) / CL};
}

// Static plus dynamic shared memory above 48 KiB needs an opt-in per kernel (once per instantiation).
template <typename K>
void allow_smem(K* kernel, size_t bytes, bool& done) {
  if (done) return;
  MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done = true;
}

}  // namespace

}  // namespace mt::kernels
