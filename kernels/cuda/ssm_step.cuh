// Device code of the single-token state update (kernels/cuda/ssm_step.cu describes the kernels): the body of one block
// of the TPC-threads-per-channel update, shared by ssm_step's kernel and the persistent decode step
// (kernels/cuda/decode_step.cu).
#pragma once

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels::decode_cuda {

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

// Block (bx, by) of the update's grid (channel blocks, rows). wait() is called once, between the loads that do not
// depend on earlier work and the rest (the PDL wait, or the persistent kernel's barrier).
template <typename T, int TPC, typename Wait>
__device__ __forceinline__ void ssm_update_block(const SsmStepParams& p, int64_t bx, int64_t by, Wait&& wait) {
  using C = typename cuda::Compute<T>::type;
  constexpr int kUpdRegs = 32 / TPC;  // states per thread held in registers (N <= 32)
  constexpr int kDtRegs = 64 / TPC;   // dt_proj weights per thread held in registers (R <= 64)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N;
  C* xd = reinterpret_cast<C*>(smem_raw);  // [E]
  C* red = xd + E;                         // partials mode: [G * E]
  const int64_t b = by;
  const int j = threadIdx.x % TPC;
  const int64_t d_raw = bx * (kUpdateThreads / TPC) + threadIdx.x / TPC;
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
  wait();
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

}  // namespace mt::kernels::decode_cuda
