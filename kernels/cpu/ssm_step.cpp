// CPU reference of the single-token mixer step (math in kernels/ssm_step.h).
#include <vector>

#include "core/error.h"
#include "kernels/detail/decode_cpu.h"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

template <typename T>
void run(const SsmStepParams& p) {
  using S = decode::Storage<T>;
  using C = typename S::C;
  const int64_t B = p.B, D = p.D, N = p.N, R = p.R, E = R + 2 * N, K = p.K;
  T* u = static_cast<T*>(p.u);
  const T* z = static_cast<const T*>(p.z);
  const C* xproj = static_cast<const C*>(p.xproj);
  const T* xw = static_cast<const T*>(p.x_proj_w);
  const T* dt_w = static_cast<const T*>(p.dt_w);
  const C* dt_bias = static_cast<const C*>(p.dt_bias);
  const C* A = static_cast<const C*>(p.A);
  const C* Dsk = static_cast<const C*>(p.D_skip);
  C* state = static_cast<C*>(p.state);
  T* y = static_cast<T*>(p.y);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<C> xd(static_cast<size_t>(E));
    if (xw) {
      if (p.conv_w) {
        const T* cw = static_cast<const T*>(p.conv_w);
        const T* cb = static_cast<const T*>(p.conv_b);
        for (int64_t d = 0; d < D; ++d) {
          C w[kConvMaxK] = {}, sv[kConvMaxK] = {};
          T* st = static_cast<T*>(p.conv_state) + b * (K - 1) * D + d;
          for (int64_t k = 0; k < K; ++k) w[k] = S::load(cw, d * K + k);
          for (int64_t j = 0; j + 1 < K; ++j) sv[j] = S::load(st, j * D);
          const C xv = S::load(u, b * p.ld + d);
          const C pre = decode::conv_pre<kConvMaxK>(xv, static_cast<int>(K), w, sv, cb ? S::load(cb, d) : C(0));
          for (int64_t j = 0; j + 2 < K; ++j) S::store(st, j * D, sv[j + 1]);
          if (K > 1) S::store(st, (K - 2) * D, xv);
          S::store(u, b * p.ld + d, decode::silu(pre));
        }
      }
      for (int64_t e = 0; e < E; ++e) {
        C s = C(0);
        for (int64_t d = 0; d < D; ++d) s += S::load(xw, e * D + d) * S::load(u, b * p.ld + d);
        xd[e] = S::round(s);
      }
    } else {
      const int64_t G = decode::ssm_step_groups(E, p.P);
      for (int64_t e = 0; e < E; ++e) {
        auto get = [&](int64_t q) { return xproj[(q * B + b) * E + e]; };
        C s = decode::partial_group_sum<C>(p.P, G, 0, get);
        for (int64_t g = 1; g < G; ++g) s += decode::partial_group_sum<C>(p.P, G, g, get);
        xd[e] = S::round(s);
      }
    }
    const C* dt = xd.data();
    const C* Bm = dt + R;
    const C* Cm = Bm + N;
#pragma omp parallel for schedule(static) if (D * N >= (1 << 14))
    for (int64_t d = 0; d < D; ++d) {
      C delta = C(0);
      for (int64_t r = 0; r < R; ++r) delta += S::load(dt_w, d * R + r) * dt[r];
      const C dtv = decode::softplus(S::round(delta) + (dt_bias ? dt_bias[d] : C(0)));
      const C uu = S::load(u, b * p.ld + d);
      C* h = state + (b * D + d) * N;
      C acc = C(0);
      for (int64_t n = 0; n < N; ++n) {
        h[n] = decode::exp_c(dtv * A[d * N + n]) * h[n] + dtv * Bm[n] * uu;
        acc += Cm[n] * h[n];
      }
      C yv = acc + (Dsk ? Dsk[d] : C(0)) * uu;
      if (z) yv *= decode::silu(S::load(z, b * p.ld + d));
      S::store(y, b * D + d, yv);
    }
  }
}

}  // namespace

void ssm_step_check(const SsmStepParams& p) {
  MT_ASSERT(p.B >= 0 && p.D >= 0 && p.N >= 1 && p.R >= 1 && p.P >= 1 && p.ld >= p.D, "ssm_step: bad sizes");
  MT_ASSERT(p.u && p.dt_w && p.A && p.state && p.y && (p.x_proj_w || p.xproj), "ssm_step: missing buffers");
  if (p.x_proj_w && p.conv_w) {
    MT_CHECK(p.K >= 1 && p.K <= kConvMaxK, ErrorKind::Shape, "ssm_step: conv width ", p.K, " outside [1, ", kConvMaxK,
             "]");
    MT_ASSERT(p.K == 1 || p.conv_state, "ssm_step: missing conv state");
  }
}

void ssm_step_cpu(const SsmStepParams& p) {
  ssm_step_check(p);
  decode::dispatch_storage(p.dtype, "ssm_step_cpu", [&](auto tag) { run<typename decltype(tag)::type>(p); });
}

}  // namespace mt::kernels
