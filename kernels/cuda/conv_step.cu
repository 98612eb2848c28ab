// CUDA single-token causal conv (math in kernels/conv_step.h): one thread per (row, channel), channels fastest, so a
// warp reads 32 consecutive channels of the input, the state rows and the taps.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/conv_step.h"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"

namespace mt::kernels {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) conv_step_kernel(ConvStepParams p) {
  using C = typename cuda::Compute<T>::type;
  const int64_t D = p.D;
  const int K = static_cast<int>(p.K);
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  const int64_t d = i % D, b = i / D;
  const bool active = b < p.B;
  T* s = static_cast<T*>(p.state) + b * (K - 1) * D + d;
  // Taps, bias and this channel's state do not depend on the previous kernel (the state was last written by this
  // layer's conv one step earlier): read before waiting for it.
  C w[kConvStepMaxK], sv[kConvStepMaxK];
  C bias = C(0);
  if (active) {
#pragma unroll
    for (int k = 0; k < kConvStepMaxK; ++k) {
      if (k < K) w[k] = cuda::load(static_cast<const T*>(p.weight), d * K + k);
      if (k + 1 < K) sv[k] = cuda::load(s, k * D);
    }
    if (p.bias) bias = cuda::load(static_cast<const T*>(p.bias), d);
  }
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  if (!active) return;
  const C xv = cuda::load(static_cast<const T*>(p.x), b * p.ldx + d);
  const C pre = decode::conv_pre<kConvStepMaxK>(xv, K, w, sv, bias);
#pragma unroll
  for (int j = 0; j + 1 < kConvStepMaxK; ++j)
    if (j + 2 < K) s[j * D] = cuda::from_compute<T>(sv[j + 1]);
  if (K > 1) s[(K - 2) * D] = cuda::from_compute<T>(xv);
  static_cast<T*>(p.u)[b * p.ldu + d] = cuda::from_compute<T>(p.silu ? decode::silu(pre) : pre);
}

}  // namespace

void conv_step_cuda(const ConvStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.ldx >= p.D && p.ldu >= p.D, "conv_step: bad sizes");
  MT_CHECK(p.K >= 1 && p.K <= kConvStepMaxK, ErrorKind::Shape, "conv_step: conv width ", p.K, " outside [1, ",
           kConvStepMaxK, "]");
  MT_ASSERT(p.x && p.u && (p.K == 1 || p.state) && p.weight, "conv_step: missing buffers");
  const int64_t n = p.B * p.D;
  if (n == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    decode_cuda::launch(conv_step_kernel<T>, dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads)), dim3(kThreads),
                        0, p.pdl, p);
  });
}

}  // namespace mt::kernels
