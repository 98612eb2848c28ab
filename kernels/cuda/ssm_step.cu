// CUDA single-token mixer step (math in kernels/ssm_step.h).
//
// The state update (ssm_update_kernel): 16 threads per channel, 16 channels per block, grid (channel blocks, rows),
// so one row already fills D / 16 blocks (4 threads and 64 channels per block once that exceeds a wave; in row mode
// with xrow and N <= 16, 4 threads per row and channel instead: ssm_update_quads_kernel). Before waiting for the
// previous kernel a thread loads what does not depend on it: its channel's biases, its dt_proj row and its states' A
// and h (the state was last written by this layer one step earlier). After the wait the block forms its row's x_proj
// outputs (partials mode: the partial sums in the fixed order of kernels/detail/decode_math.h, thread g * E + e adding
// group g of output e; row mode: xrow), then each group of 16 (or 4) lanes splits dt_proj's terms and the N states of
// one channel and meets by shuffles. Row mode with xrow: conv_step_kernel (one thread per row and channel), x_proj as
// one GEMM, the update kernel. Row mode without xrow: one block of 512 threads per row does the conv step into shared
// memory, x_proj with a warp per output and the channel updates.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/gemm.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

using decode_cuda::round_to;

constexpr int kRowThreads = 512;

// Channel d of row b once xd (the R + 2N x_proj outputs, rounded) is known: one thread does the whole channel (the
// one-block-per-row kernel).
template <typename T>
__device__ __forceinline__ void channel_update(const SsmStepParams& p, const typename cuda::Compute<T>::type* xd,
                                               int64_t b, int64_t d, typename cuda::Compute<T>::type bias,
                                               typename cuda::Compute<T>::type dskip) {
  using C = typename cuda::Compute<T>::type;
  const int64_t D = p.D, N = p.N, R = p.R;
  const T* dt_w = static_cast<const T*>(p.dt_w) + d * R;
  C delta = C(0);
  for (int64_t r = 0; r < R; ++r) delta += cuda::load(dt_w, r) * xd[r];
  const C dtv = decode::softplus(round_to<T>(delta) + bias);
  const C uu = cuda::load(static_cast<const T*>(p.u), b * p.ld + d);
  const C* Bm = xd + R;
  const C* Cm = Bm + N;
  C* h = static_cast<C*>(p.state) + (b * D + d) * N;
  const C* Ad = static_cast<const C*>(p.A) + d * N;
  C acc = C(0);
  for (int64_t n = 0; n < N; ++n) {
    const C hn = decode::exp_c(dtv * Ad[n]) * h[n] + dtv * Bm[n] * uu;
    h[n] = hn;
    acc += Cm[n] * hn;
  }
  C yv = acc + dskip * uu;
  if (p.z) yv *= decode::silu(cuda::load(static_cast<const T*>(p.z), b * p.ld + d));
  static_cast<T*>(p.y)[b * D + d] = cuda::from_compute<T>(yv);
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) ssm_row_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t D = p.D, E = p.R + 2 * p.N;
  const int K = static_cast<int>(p.K);
  C* us = reinterpret_cast<C*>(smem_raw);  // [D]
  C* xd = us + D;                          // [E]
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  T* u = static_cast<T*>(p.u) + b * p.ld;
  for (int64_t d = threadIdx.x; d < D; d += kRowThreads) {
    C uv = cuda::load(u, d);
    if (p.conv_w) {
      const T* cw = static_cast<const T*>(p.conv_w) + d * K;
      T* st = static_cast<T*>(p.conv_state) + b * (K - 1) * D + d;
      C w[kConvMaxK], sv[kConvMaxK];
#pragma unroll
      for (int k = 0; k < kConvMaxK; ++k) {
        if (k < K) w[k] = cuda::load(cw, k);
        if (k + 1 < K) sv[k] = cuda::load(st, k * D);
      }
      const C cb = p.conv_b ? cuda::load(static_cast<const T*>(p.conv_b), d) : C(0);
      const C pre = decode::conv_pre<kConvMaxK>(uv, K, w, sv, cb);
#pragma unroll
      for (int j = 0; j + 1 < kConvMaxK; ++j)
        if (j + 2 < K) st[j * D] = cuda::from_compute<T>(sv[j + 1]);
      if (K > 1) st[(K - 2) * D] = cuda::from_compute<T>(uv);
      uv = round_to<T>(decode::silu(pre));
      u[d] = cuda::from_compute<T>(uv);
    }
    us[d] = uv;
  }
  __syncthreads();
  const T* xw = static_cast<const T*>(p.x_proj_w);
  for (int64_t e = warp; e < E; e += kRowThreads / 32) {
    C acc = C(0);
    for (int64_t d = lane; d < D; d += 32) acc += cuda::load(xw, e * D + d) * us[d];
    acc = decode_cuda::warp_sum(acc);
    if (lane == 0) xd[e] = round_to<T>(acc);
  }
  __syncthreads();
  const C* bias = static_cast<const C*>(p.dt_bias);
  const C* dskip = static_cast<const C*>(p.D_skip);
  for (int64_t d = threadIdx.x; d < D; d += kRowThreads)
    channel_update<T>(p, xd, b, d, bias ? bias[d] : C(0), dskip ? dskip[d] : C(0));
}

// ---- The state update with TPC threads per channel (16, or 4 for large batches): thread j of a channel takes the
// states n = j, j + TPC, ... and the dt_proj terms r = j, j + TPC, ...; the two sums meet by shuffles within the TPC
// lanes. kUpdateThreads / TPC channels per block, so that even one row gives D / 16 blocks; with many rows, 4 threads
// per channel give each thread four states and a quarter of the blocks, whose waves were the kernel's time.
// xd (the rounded x_proj outputs of the block's row) comes from the partials (xproj set) or from xrow.
constexpr int kUpdateThreads = 256;

template <int TPC, typename C>
__device__ __forceinline__ C group_sum(C v) {
#pragma unroll
  for (int o = TPC / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int TPC>
__global__ void __launch_bounds__(kUpdateThreads) ssm_update_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  constexpr int kUpdRegs = 32 / TPC;  // states per thread held in registers (N <= 32)
  constexpr int kDtRegs = 64 / TPC;   // dt_proj weights per thread held in registers (R <= 64)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N;
  C* xd = reinterpret_cast<C*>(smem_raw);  // [E]
  C* red = xd + E;                         // partials mode: [G * E]
  const int64_t b = blockIdx.y;
  const int j = threadIdx.x % TPC;
  const int64_t d_raw = static_cast<int64_t>(blockIdx.x) * (kUpdateThreads / TPC) + threadIdx.x / TPC;
  // Lanes past the last channel compute channel 0's values and store nothing: every lane takes part in the shuffles.
  const bool active = d_raw < D;
  const int64_t d = active ? d_raw : 0;
  // Before the wait: what no earlier kernel of this step writes (weights, dt_proj's row included, and the state this
  // layer wrote a step ago).
  const C bias = p.dt_bias ? static_cast<const C*>(p.dt_bias)[d] : C(0);
  const C dskip = p.D_skip ? static_cast<const C*>(p.D_skip)[d] : C(0);
  C a_r[kUpdRegs], h_r[kUpdRegs];
#pragma unroll
  for (int i = 0; i < kUpdRegs; ++i) {
    const int64_t n = j + static_cast<int64_t>(i) * TPC;
    a_r[i] = n < N ? static_cast<const C*>(p.A)[d * N + n] : C(0);
    h_r[i] = n < N ? static_cast<const C*>(p.state)[(b * D + d) * N + n] : C(0);
  }
  const T* dt_w = static_cast<const T*>(p.dt_w) + d * R;
  C w_r[kDtRegs];
#pragma unroll
  for (int i = 0; i < kDtRegs; ++i) {
    const int64_t r = j + static_cast<int64_t>(i) * TPC;
    w_r[i] = r < R ? static_cast<C>(cuda::load(dt_w, r)) : C(0);
  }
  decode_cuda::l2_prefetch(p.prefetch);
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  // The in_proj outputs of this channel, loaded while the x_proj sums are formed.
  const C uu = cuda::load(static_cast<const T*>(p.u), b * p.ld + d);
  const C zz = p.z ? cuda::load(static_cast<const T*>(p.z), b * p.ld + d) : C(0);
  if (p.xproj != nullptr) {
    const int64_t G = decode::ssm_step_groups(E, p.P);
    const C* xproj = static_cast<const C*>(p.xproj);
    for (int64_t i = threadIdx.x; i < G * E; i += kUpdateThreads) {
      const int64_t g = i / E, e = i % E;
      red[i] = decode::partial_group_sum<C>(p.P, G, g, [&](int64_t q) { return xproj[(q * B + b) * E + e]; });
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < E; e += kUpdateThreads) {
      C s = red[e];
      for (int64_t g = 1; g < G; ++g) s += red[g * E + e];
      xd[e] = round_to<T>(s);
    }
  } else {
    const C* xr = static_cast<const C*>(p.xrow) + b * E;
    for (int64_t e = threadIdx.x; e < E; e += kUpdateThreads) xd[e] = round_to<T>(xr[e]);
  }
  __syncthreads();
  C delta = C(0);
#pragma unroll
  for (int i = 0; i < kDtRegs; ++i) {
    const int64_t r = j + static_cast<int64_t>(i) * TPC;
    if (r < R) delta += w_r[i] * xd[r];
  }
  for (int64_t r = j + kDtRegs * TPC; r < R; r += TPC) delta += cuda::load(dt_w, r) * xd[r];
  delta = group_sum<TPC>(delta);
  const C dtv = decode::softplus(round_to<T>(delta) + bias);
  const C* Bm = xd + R;
  const C* Cm = Bm + N;
  C* h = static_cast<C*>(p.state) + (b * D + d) * N;
  C acc = C(0);
#pragma unroll
  for (int i = 0; i < kUpdRegs; ++i) {
    const int64_t n = j + static_cast<int64_t>(i) * TPC;
    if (n < N) {
      const C hn = decode::exp_c(dtv * a_r[i]) * h_r[i] + dtv * Bm[n] * uu;
      if (active) h[n] = hn;
      acc += Cm[n] * hn;
    }
  }
  for (int64_t n = j + kUpdRegs * TPC; n < N; n += TPC) {  // states beyond the registers' (N > 32)
    const C hn = decode::exp_c(dtv * static_cast<const C*>(p.A)[d * N + n]) * h[n] + dtv * Bm[n] * uu;
    if (active) h[n] = hn;
    acc += Cm[n] * hn;
  }
  acc = group_sum<TPC>(acc);
  if (active && j == 0) {
    C yv = acc + dskip * uu;
    if (p.z) yv *= decode::silu(zz);
    static_cast<T*>(p.y)[b * D + d] = cuda::from_compute<T>(yv);
  }
}

// Leading dimension of the staged dt_proj rows: odd, so that the lanes of a warp reading different channels' rows at
// the same r hit different banks.
__host__ __device__ inline int64_t dt_tile_ld(int64_t R) { return R | 1; }

// ---- The state update for many rows in row mode (xrow), N <= 16: kQuad threads per (row, channel), each holding
// kQuadStates consecutive states, so that a warp (8 channels of one row) reads and writes 512 contiguous bytes of the
// state with 16-byte accesses. A block is 8 rows (one per warp) x 8 channels: warp w stages channel w's dt_proj row in
// shared memory (coalesced, no index division), the block stages its rows' x_proj outputs, and the 4 threads of a
// channel split dt_proj's terms and y's states and meet by shuffles, as the TPC kernels do.
constexpr int kQuad = 4, kQuadStates = 4, kQuadChannels = 32 / kQuad, kQuadRows = kUpdateThreads / 32;
constexpr int64_t kQuadMaxN = kQuad * kQuadStates;
static_assert(kQuadChannels == kQuadRows, "warp w stages channel w's dt_proj row");

template <typename C>
size_t update_quads_smem(int64_t R, int64_t E) {
  return static_cast<size_t>(kQuadChannels * dt_tile_ld(R) + kQuadRows * E) * sizeof(C);
}

// v[i] = src[i] for i < min(n, kQuadStates) (zero beyond): one 16-byte load for f32 where n >= 4 and src is aligned.
template <typename C>
__device__ __forceinline__ void load_quad(const C* src, int64_t n, C (&v)[kQuadStates]) {
  if constexpr (sizeof(C) == 4) {
    if (n >= 4 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
      const float4 q = *reinterpret_cast<const float4*>(src);
      v[0] = q.x;
      v[1] = q.y;
      v[2] = q.z;
      v[3] = q.w;
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < kQuadStates; ++i) v[i] = i < n ? src[i] : C(0);
}

template <typename C>
__device__ __forceinline__ void store_quad(C* dst, int64_t n, const C (&v)[kQuadStates]) {
  if constexpr (sizeof(C) == 4) {
    if (n >= 4 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < kQuadStates; ++i)
    if (i < n) dst[i] = v[i];
}

template <typename T>
__global__ void __launch_bounds__(kUpdateThreads) ssm_update_quads_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N, ldw = dt_tile_ld(R);
  C* wt = reinterpret_cast<C*>(smem_raw);  // [kQuadChannels, ldw]: dt_proj rows of the block's channels
  C* xd = wt + kQuadChannels * ldw;        // [kQuadRows, E]: the rows' x_proj outputs, rounded
  const int lane = threadIdx.x % 32, rb = threadIdx.x / 32, c = lane / kQuad, q = lane % kQuad;
  const int64_t d0 = static_cast<int64_t>(blockIdx.x) * kQuadChannels,
                b0 = static_cast<int64_t>(blockIdx.y) * kQuadRows;
  const int64_t nc = D - d0 < kQuadChannels ? D - d0 : kQuadChannels;
  const int64_t nr = B - b0 < kQuadRows ? B - b0 : kQuadRows;
  // Threads past the last channel or row compute a valid one's values (every lane takes part in the shuffles) and
  // store nothing.
  const bool active = c < nc && rb < nr;
  const int64_t d = d0 + (c < nc ? c : nc - 1), b = b0 + (rb < nr ? rb : nr - 1);
  // Before the wait: what no earlier kernel of this step writes (weights, and the state this layer wrote a step ago).
  const auto to_c = [](T v) { return cuda::load(&v, 0); };
  if (rb < nc) {
    decode_cuda::batched_copy<4>(wt + rb * ldw, static_cast<const T*>(p.dt_w) + (d0 + rb) * R, lane, R, 32, to_c);
  }
  const C bias = p.dt_bias ? static_cast<const C*>(p.dt_bias)[d] : C(0);
  const C dskip = p.D_skip ? static_cast<const C*>(p.D_skip)[d] : C(0);
  const int64_t n0 = static_cast<int64_t>(q) * kQuadStates;
  C* h = static_cast<C*>(p.state) + (b * D + d) * N + n0;
  C a_r[kQuadStates], h_r[kQuadStates];
  load_quad(static_cast<const C*>(p.A) + d * N + n0, N - n0, a_r);
  load_quad<C>(h, N - n0, h_r);
  decode_cuda::l2_prefetch(p.prefetch);
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  const C* xr = static_cast<const C*>(p.xrow) + b0 * E;
  decode_cuda::batched_copy<4>(xd, xr, threadIdx.x, nr * E, kUpdateThreads, [](C v) { return round_to<T>(v); });
  const C uu = cuda::load(static_cast<const T*>(p.u), b * p.ld + d);
  const C zz = p.z ? cuda::load(static_cast<const T*>(p.z), b * p.ld + d) : C(0);
  __syncthreads();
  const C* w = wt + (d - d0) * ldw;  // lanes past the last channel read the clamped channel's staged row
  const C* x = xd + rb * E;
  C delta = C(0);
  for (int64_t r = q; r < R; r += kQuad) delta += w[r] * x[r];
  delta = group_sum<kQuad>(delta);
  const C dtv = decode::softplus(round_to<T>(delta) + bias);
  const C* Bm = x + R + n0;
  const C* Cm = x + R + N + n0;
  C acc = C(0);
#pragma unroll
  for (int i = 0; i < kQuadStates; ++i)
    if (n0 + i < N) {
      h_r[i] = decode::exp_c(dtv * a_r[i]) * h_r[i] + dtv * Bm[i] * uu;
      acc += Cm[i] * h_r[i];
    }
  acc = group_sum<kQuad>(acc);
  if (!active) return;
  store_quad(h, N - n0, h_r);
  if (q == 0) {
    C yv = acc + dskip * uu;
    if (p.z) yv *= decode::silu(zz);
    static_cast<T*>(p.y)[b * D + d] = cuda::from_compute<T>(yv);
  }
}

// Row mode's conv step, one thread per (row, channel), grid (channel blocks, rows): u[b, d] <- round(silu(conv)), the
// conv state shifted. The taps, the bias and the conv state (this layer's, from a step ago) are loaded before the wait.
template <typename T>
__global__ void conv_step_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  const int K = static_cast<int>(p.K);
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, b = blockIdx.y;
  const bool active = d < p.D;
  const int64_t dd = active ? d : 0;
  const T* cw = static_cast<const T*>(p.conv_w) + dd * K;
  T* st = static_cast<T*>(p.conv_state) + b * (K - 1) * p.D + dd;
  C w[kConvMaxK], sv[kConvMaxK];
#pragma unroll
  for (int k = 0; k < kConvMaxK; ++k) {
    if (k < K) w[k] = cuda::load(cw, k);
    if (k + 1 < K) sv[k] = cuda::load(st, k * p.D);
  }
  const C cb = p.conv_b ? cuda::load(static_cast<const T*>(p.conv_b), dd) : C(0);
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  if (!active) return;
  T* u = static_cast<T*>(p.u) + b * p.ld;
  const C uv = cuda::load(u, d);
  const C pre = decode::conv_pre<kConvMaxK>(uv, K, w, sv, cb);
#pragma unroll
  for (int k = 0; k + 1 < kConvMaxK; ++k)
    if (k + 2 < K) st[k * p.D] = cuda::from_compute<T>(sv[k + 1]);
  if (K > 1) st[(K - 2) * p.D] = cuda::from_compute<T>(uv);
  u[d] = cuda::from_compute<T>(round_to<T>(decode::silu(pre)));
}

}  // namespace

void ssm_step_cuda(const SsmStepParams& p) {
  ssm_step_check(p);
  if (p.B == 0 || p.D == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = typename cuda::Compute<T>::type;
    const int64_t E = p.R + 2 * p.N;
    // 16 threads per channel while the blocks fit in about one wave (8 per SM), else 4.
    const int64_t blocks16 = (p.D + kUpdateThreads / 16 - 1) / (kUpdateThreads / 16) * p.B;
    const bool wide = blocks16 > 8 * static_cast<int64_t>(CudaContext::get().sm_count());
    const int tpc = wide ? 4 : 16;
    const dim3 ugrid(static_cast<unsigned>((p.D + kUpdateThreads / tpc - 1) / (kUpdateThreads / tpc)),
                     static_cast<unsigned>(p.B));
    auto update = wide ? ssm_update_kernel<T, 4> : ssm_update_kernel<T, 16>;
    if (p.x_proj_w && p.xrow) {
      MT_CHECK(p.B <= 65535, ErrorKind::Shape, "ssm_step_cuda: batch ", p.B, " exceeds 65535");
      if (p.conv_w) {
        decode_cuda::launch(conv_step_kernel<T>,
                            dim3(static_cast<unsigned>((p.D + 255) / 256), static_cast<unsigned>(p.B)), dim3(256), 0,
                            p.pdl, p);
      }
      GemmParams g;  // xrow[B, E] = u[B, D] @ x_proj_w[E, D]^T, accumulated and stored in the compute dtype
      g.dtype = p.dtype;
      g.trans_b = true;
      g.M = p.B;
      g.N = E;
      g.K = p.D;
      g.A = p.u;
      g.lda = p.ld;
      g.B = p.x_proj_w;
      g.ldb = p.D;
      g.C = p.xrow;
      g.ldc = E;
      g.c_f32 = p.dtype == DType::BF16 || p.dtype == DType::F16;
      gemm_cuda(g);
      SsmStepParams q = p;
      q.xproj = nullptr;
      const size_t quads_smem = update_quads_smem<C>(p.R, E);
      if (wide && p.N <= kQuadMaxN && quads_smem <= 48 * 1024) {
        const dim3 qgrid(static_cast<unsigned>((p.D + kQuadChannels - 1) / kQuadChannels),
                         static_cast<unsigned>((p.B + kQuadRows - 1) / kQuadRows));
        decode_cuda::launch(ssm_update_quads_kernel<T>, qgrid, dim3(kUpdateThreads), quads_smem, p.pdl, q);
      } else {
        decode_cuda::launch(update, ugrid, dim3(kUpdateThreads), static_cast<size_t>(E) * sizeof(C), p.pdl, q);
      }
      return;
    }
    if (p.x_proj_w) {
      const size_t smem = static_cast<size_t>(p.D + E) * sizeof(C);
      MT_CHECK(smem <= 48 * 1024, ErrorKind::Shape, "ssm_step_cuda: d_inner ", p.D, " too large for the row mode");
      MT_CHECK(p.B <= 0x7fffffff, ErrorKind::Shape, "ssm_step_cuda: batch ", p.B);
      decode_cuda::launch(ssm_row_kernel<T>, dim3(static_cast<unsigned>(p.B)), dim3(kRowThreads), smem, p.pdl, p);
      return;
    }
    MT_CHECK(p.B <= 65535, ErrorKind::Shape, "ssm_step_cuda: batch ", p.B, " exceeds 65535");
    const size_t smem = static_cast<size_t>(E + decode::ssm_step_groups(E, p.P) * E) * sizeof(C);
    MT_CHECK(smem <= 48 * 1024, ErrorKind::Shape, "ssm_step_cuda: dt_rank + 2 d_state = ", E, " too large");
    decode_cuda::launch(update, ugrid, dim3(kUpdateThreads), smem, p.pdl, p);
  });
}

}  // namespace mt::kernels
