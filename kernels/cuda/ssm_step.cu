// CUDA single-token selective state update (math in kernels/ssm_step.h).
//
// Grid (channel tiles of 128, rows). A block first sums the x_proj partials of its row into shared memory (each
// thread a few of the R + 2N outputs, over p in order), then each thread updates one channel's N states: the
// dt_proj dot product over R, softplus, the N-state recurrence, D and the gate. The channel's biases are read before
// waiting for the previous kernel.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads) ssm_step_kernel(SsmStepParams p) {
  using C = typename cuda::Compute<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* xd = reinterpret_cast<C*>(smem_raw);
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N;
  const int64_t b = blockIdx.y;
  const int64_t d = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  const bool active = d < D;
  const C* A = static_cast<const C*>(p.A);
  C bias = C(0), dskip = C(0);
  if (active) {
    if (p.dt_bias) bias = static_cast<const C*>(p.dt_bias)[d];
    if (p.D_skip) dskip = static_cast<const C*>(p.D_skip)[d];
  }
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  const C* xproj = static_cast<const C*>(p.xproj);
  for (int64_t e = threadIdx.x; e < E; e += kThreads) {
    C s = C(0);
    for (int64_t q = 0; q < p.P; ++q) s += xproj[(q * B + b) * E + e];
    xd[e] = decode_cuda::round_to<T>(s);
  }
  __syncthreads();
  if (!active) return;
  const T* dt_w = static_cast<const T*>(p.dt_w) + d * R;
  C delta = C(0);
  for (int64_t r = 0; r < R; ++r) delta += cuda::load(dt_w, r) * xd[r];
  const C dtv = decode::softplus(decode_cuda::round_to<T>(delta) + bias);
  const C uu = cuda::load(static_cast<const T*>(p.u), b * p.ld + d);
  const C* Bm = xd + R;
  const C* Cm = Bm + N;
  C* h = static_cast<C*>(p.state) + (b * D + d) * N;
  const C* Ad = A + d * N;
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

}  // namespace

void ssm_step_cuda(const SsmStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.N >= 1 && p.R >= 1 && p.P >= 1 && p.ld >= p.D, "ssm_step: bad sizes");
  MT_ASSERT(p.u && p.xproj && p.dt_w && p.A && p.state && p.y, "ssm_step: missing buffers");
  if (p.B == 0 || p.D == 0) return;
  MT_CHECK(p.B <= 65535, ErrorKind::Shape, "ssm_step_cuda: batch ", p.B, " exceeds 65535");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = typename cuda::Compute<T>::type;
    const size_t smem = static_cast<size_t>(p.R + 2 * p.N) * sizeof(C);
    MT_CHECK(smem <= 48 * 1024, ErrorKind::Shape, "ssm_step_cuda: dt_rank + 2 d_state = ", p.R + 2 * p.N, " too large");
    decode_cuda::launch(ssm_step_kernel<T>,
                        dim3(static_cast<unsigned>((p.D + kThreads - 1) / kThreads), static_cast<unsigned>(p.B)),
                        dim3(kThreads), smem, p.pdl, p);
  });
}

}  // namespace mt::kernels
