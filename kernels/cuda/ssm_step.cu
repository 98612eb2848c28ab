// CUDA single-token mixer step (math in kernels/ssm_step.h).
//
// Partials mode: grid (channel tiles of 256, rows). Before waiting for the previous kernel a thread loads what does
// not depend on it: its channel's biases, A row and state (the state was last written by this layer one step
// earlier), into registers when N <= 16, and asks L2 for its dt_proj row. After the wait the block sums the x_proj
// partials of its row (thread g * E + e adds group g of output e, kernels/detail/decode_math.h, so all loads are in
// flight at once), then each thread updates one channel: dt_proj, softplus, the N-state recurrence, D and the gate.
// Row mode: one block of 512 threads per row: the conv step of every channel into shared memory, x_proj with a warp
// per output, then the channel updates (for batches that take cuBLAS for in_proj / out_proj: three kernels in one).
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

using decode_cuda::round_to;

constexpr int kThreads = static_cast<int>(decode::kSsmStepThreads);
constexpr int kRowThreads = 512;
constexpr int kRegN = 16;  // states held in registers up to this N

// Channel d of row b once xd (the R + 2N x_proj outputs, rounded) is known. kInRegs: A's row and the state come in
// a_r / h_r (N <= kRegN), else they are read here.
template <typename T, bool kInRegs>
__device__ __forceinline__ void channel_update(const SsmStepParams& p, const typename cuda::Compute<T>::type* xd,
                                               int64_t b, int64_t d, typename cuda::Compute<T>::type bias,
                                               typename cuda::Compute<T>::type dskip,
                                               const typename cuda::Compute<T>::type* a_r,
                                               const typename cuda::Compute<T>::type* h_r) {
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
  C acc = C(0);
  if constexpr (kInRegs) {
#pragma unroll
    for (int n = 0; n < kRegN; ++n)
      if (n < N) {
        const C hn = decode::exp_c(dtv * a_r[n]) * h_r[n] + dtv * Bm[n] * uu;
        h[n] = hn;
        acc += Cm[n] * hn;
      }
  } else {
    const C* Ad = static_cast<const C*>(p.A) + d * N;
    for (int64_t n = 0; n < N; ++n) {
      const C hn = decode::exp_c(dtv * Ad[n]) * h[n] + dtv * Bm[n] * uu;
      h[n] = hn;
      acc += Cm[n] * hn;
    }
  }
  C yv = acc + dskip * uu;
  if (p.z) yv *= decode::silu(cuda::load(static_cast<const T*>(p.z), b * p.ld + d));
  static_cast<T*>(p.y)[b * D + d] = cuda::from_compute<T>(yv);
}

template <typename T, bool kInRegs>
__global__ void __launch_bounds__(kThreads) ssm_partials_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N, P = p.P;
  const int64_t G = decode::ssm_step_groups(E, P);
  C* xd = reinterpret_cast<C*>(smem_raw);  // [E]
  C* red = xd + E;                         // [G * E]
  const int64_t b = blockIdx.y;
  const int64_t d = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  const bool active = d < D;
  C bias = C(0), dskip = C(0);
  C a_r[kInRegs ? kRegN : 1], h_r[kInRegs ? kRegN : 1];
  if (active) {
    if (p.dt_bias) bias = static_cast<const C*>(p.dt_bias)[d];
    if (p.D_skip) dskip = static_cast<const C*>(p.D_skip)[d];
    if constexpr (kInRegs) {
      const C* Ad = static_cast<const C*>(p.A) + d * N;
      const C* h = static_cast<const C*>(p.state) + (b * D + d) * N;
#pragma unroll
      for (int n = 0; n < kRegN; ++n)
        if (n < N) {
          a_r[n] = Ad[n];
          h_r[n] = h[n];
        }
    }
    const char* dt_row = static_cast<const char*>(p.dt_w) + d * R * static_cast<int64_t>(sizeof(T));
    for (int64_t off = 0; off < R * static_cast<int64_t>(sizeof(T)); off += 128) decode_cuda::prefetch_l2(dt_row + off);
  }
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();

  const C* xproj = static_cast<const C*>(p.xproj);
  for (int64_t i = threadIdx.x; i < G * E; i += kThreads) {
    const int64_t g = i / E, e = i % E;
    red[i] = decode::partial_group_sum<C>(P, G, g, [&](int64_t q) { return xproj[(q * B + b) * E + e]; });
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += kThreads) {
    C s = red[e];
    for (int64_t g = 1; g < G; ++g) s += red[g * E + e];
    xd[e] = round_to<T>(s);
  }
  __syncthreads();
  if (active) channel_update<T, kInRegs>(p, xd, b, d, bias, dskip, a_r, h_r);
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
    channel_update<T, false>(p, xd, b, d, bias ? bias[d] : C(0), dskip ? dskip[d] : C(0), nullptr, nullptr);
}

}  // namespace

void ssm_step_cuda(const SsmStepParams& p) {
  ssm_step_check(p);
  if (p.B == 0 || p.D == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = typename cuda::Compute<T>::type;
    const int64_t E = p.R + 2 * p.N;
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
    const dim3 grid(static_cast<unsigned>((p.D + kThreads - 1) / kThreads), static_cast<unsigned>(p.B));
    if (p.N <= kRegN)
      decode_cuda::launch(ssm_partials_kernel<T, true>, grid, dim3(kThreads), smem, p.pdl, p);
    else
      decode_cuda::launch(ssm_partials_kernel<T, false>, grid, dim3(kThreads), smem, p.pdl, p);
  });
}

}  // namespace mt::kernels
