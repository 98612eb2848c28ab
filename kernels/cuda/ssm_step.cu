// CUDA single-token selective state update (math in kernels/ssm_step.h).
//
// Grid (channel tiles of 256, rows). Before waiting for the previous kernel a thread loads what does not depend on
// it: its channel's biases, A row and state (the state was last written by this layer one step earlier), into
// registers when N <= 16, and asks L2 for its dt_proj row. After the wait the block sums the x_proj partials of its
// row (thread g * E + e adds group g of output e, kernels/detail/decode_math.h, so all loads are in flight at once),
// then each thread updates one channel: dt_proj, softplus, the N-state recurrence, D and the gate.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

constexpr int kThreads = static_cast<int>(decode::kSsmStepThreads);
constexpr int kRegN = 16;  // states held in registers up to this N

template <typename T, bool kInRegs>
__global__ void __launch_bounds__(kThreads) ssm_step_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N, P = p.P;
  const int64_t G = decode::ssm_step_groups(E, P);
  C* xd = reinterpret_cast<C*>(smem_raw);  // [E]
  C* red = xd + E;                         // [G * E]
  const int64_t b = blockIdx.y;
  const int64_t d = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  const bool active = d < D;
  const C* Ad = static_cast<const C*>(p.A) + d * N;
  C* h = static_cast<C*>(p.state) + (b * D + d) * N;
  const T* dt_w = static_cast<const T*>(p.dt_w) + d * R;
  C bias = C(0), dskip = C(0);
  C a_r[kInRegs ? kRegN : 1], h_r[kInRegs ? kRegN : 1];
  if (active) {
    if (p.dt_bias) bias = static_cast<const C*>(p.dt_bias)[d];
    if (p.D_skip) dskip = static_cast<const C*>(p.D_skip)[d];
    if constexpr (kInRegs) {
#pragma unroll
      for (int n = 0; n < kRegN; ++n)
        if (n < N) {
          a_r[n] = Ad[n];
          h_r[n] = h[n];
        }
    }
    for (int64_t off = 0; off < R * static_cast<int64_t>(sizeof(T)); off += 128)
      decode_cuda::prefetch_l2(reinterpret_cast<const char*>(dt_w) + off);
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
    xd[e] = decode_cuda::round_to<T>(s);
  }
  __syncthreads();
  if (!active) return;
  C delta = C(0);
  for (int64_t r = 0; r < R; ++r) delta += cuda::load(dt_w, r) * xd[r];
  const C dtv = decode::softplus(decode_cuda::round_to<T>(delta) + bias);
  const C uu = cuda::load(static_cast<const T*>(p.u), b * p.ld + d);
  const C* Bm = xd + R;
  const C* Cm = Bm + N;
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

}  // namespace

void ssm_step_cuda(const SsmStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.N >= 1 && p.R >= 1 && p.P >= 1 && p.ld >= p.D, "ssm_step: bad sizes");
  MT_ASSERT(p.u && p.xproj && p.dt_w && p.A && p.state && p.y, "ssm_step: missing buffers");
  if (p.B == 0 || p.D == 0) return;
  MT_CHECK(p.B <= 65535, ErrorKind::Shape, "ssm_step_cuda: batch ", p.B, " exceeds 65535");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = typename cuda::Compute<T>::type;
    const int64_t E = p.R + 2 * p.N;
    const size_t smem = static_cast<size_t>(E + decode::ssm_step_groups(E, p.P) * E) * sizeof(C);
    MT_CHECK(smem <= 48 * 1024, ErrorKind::Shape, "ssm_step_cuda: dt_rank + 2 d_state = ", E, " too large");
    const dim3 grid(static_cast<unsigned>((p.D + kThreads - 1) / kThreads), static_cast<unsigned>(p.B));
    if (p.N <= kRegN)
      decode_cuda::launch(ssm_step_kernel<T, true>, grid, dim3(kThreads), smem, p.pdl, p);
    else
      decode_cuda::launch(ssm_step_kernel<T, false>, grid, dim3(kThreads), smem, p.pdl, p);
  });
}

}  // namespace mt::kernels
