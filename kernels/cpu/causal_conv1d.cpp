// CPU reference for the depthwise causal conv1d (math in kernels/causal_conv1d.h). Loops in the obvious order;
// every sum runs in a fixed order so results do not depend on the thread count.
#include "kernels/causal_conv1d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/detail/time_map.h"

namespace mt::kernels {

namespace {

template <typename T>
T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

// xx[b, s, d] (see header), s in the conv's time: initial_state for s < K-1 (zero when absent), x after.
template <typename T>
struct PaddedInput {
  const T* x;
  const T* init;
  int64_t L, D, K;
  TimeMap tm;
  T operator()(int64_t b, int64_t s, int64_t d) const {
    if (s >= K - 1) return x[tm.row(b, s - (K - 1)) * D + d];
    return init ? init[(b * (K - 1) + s) * D + d] : T(0);
  }
};

// The largest lag output t of row b sees (kernels/causal_conv1d.h): K-1 without a document start in [t-(K-2), t],
// else the smallest j with a start at t-j (the start of t's document is j steps back). Tap k has lag K-1-k.
int64_t visible_lags(const TimeMap& tm, int64_t b, int64_t t, int64_t K) {
  if (tm.reset == nullptr) return K - 1;
  for (int64_t j = 0; j < K - 1 && t - j >= 0; ++j)
    if (tm.starts(b, t - j)) return j;
  return K - 1;
}

void check_dtypes(const char* what, DType dtype, DType w_dtype) {
  MT_CHECK_SHAPE((dtype == DType::F32 || dtype == DType::F64) && w_dtype == dtype, what,
                 ": CPU kernel needs f32 or f64 with weight of the same dtype, got x ", dtype_name(dtype), ", weight ",
                 dtype_name(w_dtype));
}

template <typename T>
void fwd(const CausalConv1dFwdParams& p) {
  const int64_t B = p.B, L = p.L, D = p.D, K = p.K;
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  const TimeMap tm{L, p.reverse, p.reset};
  const PaddedInput<T> xx{static_cast<const T*>(p.x), static_cast<const T*>(p.initial_state), L, D, K, tm};
  T* y = static_cast<T*>(p.y);
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * L; ++bt) {
    const int64_t b = bt / L, t = bt % L;
    const int64_t k_lo = K - 1 - visible_lags(tm, b, t, K);  // earlier taps see another document
    T* yt = y + tm.row(b, t) * D;
    for (int64_t d = 0; d < D; ++d) {
      T acc = bias ? bias[d] : T(0);
      for (int64_t k = k_lo; k < K; ++k) acc += w[d * K + k] * xx(b, t + k, d);
      yt[d] = p.silu ? acc * sigmoid(acc) : acc;
    }
  }
  if (p.final_state) {
    T* fs = static_cast<T*>(p.final_state);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t seen = visible_lags(tm, b, L - 1, K);
      for (int64_t j = 0; j < K - 1; ++j)  // row j is time L-(K-1)+j, K-2-j steps before the last output
        for (int64_t d = 0; d < D; ++d) fs[(b * (K - 1) + j) * D + d] = K - 2 - j <= seen ? xx(b, L + j, d) : T(0);
    }
  }
}

template <typename T>
void bwd(const CausalConv1dBwdParams& p) {
  const int64_t B = p.B, L = p.L, D = p.D, K = p.K;
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  const T* dy = static_cast<const T*>(p.dy);
  const T* dfin = static_cast<const T*>(p.d_final);
  const TimeMap tm{L, p.reverse, p.reset};
  const PaddedInput<T> xx{static_cast<const T*>(p.x), static_cast<const T*>(p.initial_state), L, D, K, tm};

  // g_pre = dy * silu'(pre), pre recomputed; g(b, t) is the row of output t in the conv's time.
  std::vector<T> gbuf;
  if (p.silu) {
    gbuf.resize(static_cast<size_t>(B * L * D));
#pragma omp parallel for schedule(static)
    for (int64_t bt = 0; bt < B * L; ++bt) {
      const int64_t b = bt / L, t = bt % L;
      const int64_t k_lo = K - 1 - visible_lags(tm, b, t, K);
      const T* dyt = dy + tm.row(b, t) * D;
      for (int64_t d = 0; d < D; ++d) {
        T pre = bias ? bias[d] : T(0);
        for (int64_t k = k_lo; k < K; ++k) pre += w[d * K + k] * xx(b, t + k, d);
        const T s = sigmoid(pre);
        gbuf[bt * D + d] = dyt[d] * s * (T(1) + pre * (T(1) - s));
      }
    }
  }
  auto g = [&](int64_t b, int64_t t) { return p.silu ? gbuf.data() + (b * L + t) * D : dy + tm.row(b, t) * D; };

  // dxx over s in [0, L+K-1): s < K-1 goes to d_initial_state, the rest to dx.
  if (p.dx || p.d_initial_state) {
    T* dx = static_cast<T*>(p.dx);
    T* dinit = static_cast<T*>(p.d_initial_state);
    const int64_t S = L + K - 1;
#pragma omp parallel for schedule(static)
    for (int64_t bs = 0; bs < B * S; ++bs) {
      const int64_t b = bs / S, s = bs % S;
      T* out = s >= K - 1 ? (dx ? dx + tm.row(b, s - (K - 1)) * D : nullptr)
                          : (dinit ? dinit + (b * (K - 1) + s) * D : nullptr);
      if (!out) continue;
      const int64_t k_lo = std::max<int64_t>(0, s - (L - 1)), k_hi = std::min<int64_t>(K - 1, s);
      // Input xx[s] reaches output s-k through tap k when that output sees lag K-1-k, and final_state row s-L when
      // no reset lies after it.
      const bool to_final = dfin && s >= L && K - 2 - (s - L) <= visible_lags(tm, b, L - 1, K);
      for (int64_t d = 0; d < D; ++d) {
        T acc = to_final ? dfin[(b * (K - 1) + (s - L)) * D + d] : T(0);
        for (int64_t k = k_lo; k <= k_hi; ++k)
          if (K - 1 - k <= visible_lags(tm, b, s - k, K)) acc += w[d * K + k] * g(b, s - k)[d];
        out[d] = acc;
      }
    }
  }

  // dweight / dbias: each thread owns a block of channels and sums over (b, t) in order.
  if (p.dweight || p.dbias) {
    T* dw = static_cast<T*>(p.dweight);
    T* db = static_cast<T*>(p.dbias);
    constexpr int64_t kChunk = 64;
    const int64_t nchunks = (D + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t d0 = c * kChunk, d1 = std::min(D, d0 + kChunk);
      std::vector<T> acc_w(static_cast<size_t>((d1 - d0) * K), T(0)), acc_b(static_cast<size_t>(d1 - d0), T(0));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < L; ++t)
          for (int64_t d = d0; d < d1; ++d) {
            const T gv = g(b, t)[d];
            acc_b[d - d0] += gv;
            const int64_t k_lo = K - 1 - visible_lags(tm, b, t, K);
            for (int64_t k = k_lo; k < K; ++k) acc_w[(d - d0) * K + k] += gv * xx(b, t + k, d);
          }
      for (int64_t d = d0; d < d1; ++d) {
        if (db) db[d] = acc_b[d - d0];
        if (dw)
          for (int64_t k = 0; k < K; ++k) dw[d * K + k] = acc_w[(d - d0) * K + k];
      }
    }
  }
}

}  // namespace

void causal_conv1d_fwd_cpu(const CausalConv1dFwdParams& p) {
  check_dtypes("causal_conv1d_fwd_cpu", p.dtype, p.w_dtype);
  MT_CHECK_SHAPE(!p.reverse || (!p.initial_state && !p.final_state),
                 "causal_conv1d_fwd_cpu: the reverse conv takes no initial or final state");
  if (p.dtype == DType::F64)
    fwd<double>(p);
  else
    fwd<float>(p);
}

void causal_conv1d_bwd_cpu(const CausalConv1dBwdParams& p) {
  check_dtypes("causal_conv1d_bwd_cpu", p.dtype, p.w_dtype);
  MT_CHECK_SHAPE(!p.reverse || (!p.initial_state && !p.d_final && !p.d_initial_state),
                 "causal_conv1d_bwd_cpu: the reverse conv takes no initial or final state");
  if (p.dtype == DType::F64)
    bwd<double>(p);
  else
    bwd<float>(p);
}

}  // namespace mt::kernels
