// CPU reference of the single-token causal conv (math in kernels/conv_step.h).
#include "kernels/conv_step.h"
#include "core/error.h"
#include "kernels/detail/decode_cpu.h"
#include "kernels/detail/decode_math.h"

namespace mt::kernels {

namespace {

template <typename T>
void run(const ConvStepParams& p) {
  using S = decode::Storage<T>;
  using C = typename S::C;
  const int64_t B = p.B, D = p.D, K = p.K;
  const T* x = static_cast<const T*>(p.x);
  T* u = static_cast<T*>(p.u);
  T* state = static_cast<T*>(p.state);
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
#pragma omp parallel for schedule(static) if (B * D >= (1 << 14))
  for (int64_t d = 0; d < D; ++d) {
    C wd[kConvStepMaxK] = {}, sv[kConvStepMaxK] = {};
    for (int64_t k = 0; k < K; ++k) wd[k] = S::load(w, d * K + k);
    const C bd = bias ? S::load(bias, d) : C(0);
    for (int64_t b = 0; b < B; ++b) {
      T* s = state + b * (K - 1) * D + d;
      for (int64_t j = 0; j + 1 < K; ++j) sv[j] = S::load(s, j * D);
      const C xv = S::load(x, b * p.ldx + d);
      const C pre = decode::conv_pre<kConvStepMaxK>(xv, static_cast<int>(K), wd, sv, bd);
      for (int64_t j = 0; j + 2 < K; ++j) S::store(s, j * D, sv[j + 1]);
      if (K > 1) S::store(s, (K - 2) * D, xv);
      S::store(u, b * p.ldu + d, p.silu ? decode::silu(pre) : pre);
    }
  }
}

}  // namespace

void conv_step_cpu(const ConvStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.ldx >= p.D && p.ldu >= p.D, "conv_step: bad sizes");
  MT_CHECK(p.K >= 1 && p.K <= kConvStepMaxK, ErrorKind::Shape, "conv_step: conv width ", p.K, " outside [1, ",
           kConvStepMaxK, "]");
  MT_ASSERT(p.x && p.u && (p.K == 1 || p.state) && p.weight, "conv_step: missing buffers");
  decode::dispatch_storage(p.dtype, "conv_step_cpu", [&](auto tag) { run<typename decltype(tag)::type>(p); });
}

}  // namespace mt::kernels
