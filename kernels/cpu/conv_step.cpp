// CPU reference of the single-token causal conv (math in kernels/conv_step.h).
#include <vector>

#include "core/error.h"
#include "kernels/conv_step.h"
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
    std::vector<C> wd(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) wd[k] = S::load(w, d * K + k);
    const C bd = bias ? S::load(bias, d) : C(0);
    for (int64_t b = 0; b < B; ++b) {
      T* s = state + b * (K - 1) * D + d;
      const C xv = S::load(x, b * p.ldx + d);
      const C pre = decode::conv_step_one<C>(
          xv, K, D, [&](int64_t i) { return S::load(s, i); }, [&](int64_t i, C v) { S::store(s, i, v); }, wd.data(),
          bd);
      S::store(u, b * p.ldu + d, p.silu ? decode::silu(pre) : pre);
    }
  }
}

}  // namespace

void conv_step_cpu(const ConvStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.K >= 1 && p.ldx >= p.D && p.ldu >= p.D, "conv_step: bad sizes");
  MT_ASSERT(p.x && p.u && (p.K == 1 || p.state) && p.weight, "conv_step: missing buffers");
  decode::dispatch_storage(p.dtype, "conv_step_cpu", [&](auto tag) { run<typename decltype(tag)::type>(p); });
}

}  // namespace mt::kernels
