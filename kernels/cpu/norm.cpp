// CPU reference for RMSNorm / LayerNorm with the fused residual add (math in kernels/norm.h). Statistics use the
// two-pass formula (mean, then mean of squared deviations); sums run in a fixed order (thread-count independent).
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "core/error.h"

namespace mt::kernels {

namespace {

template <typename T>
void fwd(const NormFwdParams& p) {
  const int64_t R = p.rows, H = p.H;
  const T* x = static_cast<const T*>(p.x);
  const T* res = static_cast<const T*>(p.residual);
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  T* rout = static_cast<T*>(p.residual_out);
  T* mean_out = static_cast<T*>(p.mean);
  T* rstd_out = static_cast<T*>(p.rstd);
  const T eps = static_cast<T>(p.eps);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < R; ++i) {
    std::vector<T> r(static_cast<size_t>(H));
    for (int64_t c = 0; c < H; ++c) {
      r[c] = x[i * H + c] + (res ? res[i * H + c] : T(0));
      if (rout) rout[i * H + c] = r[c];
    }
    T mu = T(0);
    if (!p.rms) {
      for (int64_t c = 0; c < H; ++c) mu += r[c];
      mu /= static_cast<T>(H);
    }
    T ss = T(0);
    for (int64_t c = 0; c < H; ++c) ss += (r[c] - mu) * (r[c] - mu);
    const T rstd = T(1) / std::sqrt(ss / static_cast<T>(H) + eps);
    if (mean_out) mean_out[i] = mu;
    if (rstd_out) rstd_out[i] = rstd;
    for (int64_t c = 0; c < H; ++c) y[i * H + c] = (r[c] - mu) * rstd * w[c] + (bias ? bias[c] : T(0));
  }
}

template <typename T>
void bwd(const NormBwdParams& p) {
  const int64_t R = p.rows, H = p.H;
  const T* r = static_cast<const T*>(p.r);
  const T* mean = static_cast<const T*>(p.mean);
  const T* rstd = static_cast<const T*>(p.rstd);
  const T* w = static_cast<const T*>(p.weight);
  const T* dy = static_cast<const T*>(p.dy);
  const T* dres_out = static_cast<const T*>(p.d_residual_out);
  T* dx = static_cast<T*>(p.dx);
  T* dres = static_cast<T*>(p.d_residual);
  auto mu_of = [&](int64_t i) { return (!p.rms && mean) ? mean[i] : T(0); };

  if (dx || dres) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < R; ++i) {
      const T mu = mu_of(i), rs = rstd[i];
      T sum_g = T(0), sum_gn = T(0);
      for (int64_t c = 0; c < H; ++c) {
        const T gn = dy[i * H + c] * w[c];
        sum_g += gn;
        sum_gn += gn * (r[i * H + c] - mu) * rs;
      }
      const T mean_g = p.rms ? T(0) : sum_g / static_cast<T>(H);
      const T mean_gn = sum_gn / static_cast<T>(H);
      for (int64_t c = 0; c < H; ++c) {
        const T n = (r[i * H + c] - mu) * rs;
        T d = rs * (dy[i * H + c] * w[c] - mean_g - n * mean_gn);
        if (dres_out) d += dres_out[i * H + c];
        if (dx) dx[i * H + c] = d;
        if (dres) dres[i * H + c] = d;
      }
    }
  }

  if (p.dweight || p.dbias) {
    T* dw = static_cast<T*>(p.dweight);
    T* db = static_cast<T*>(p.dbias);
    constexpr int64_t kChunk = 64;
    const int64_t nchunks = (H + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const int64_t c0 = ch * kChunk, c1 = std::min(H, c0 + kChunk);
      std::vector<T> aw(static_cast<size_t>(c1 - c0), T(0)), ab(static_cast<size_t>(c1 - c0), T(0));
      for (int64_t i = 0; i < R; ++i) {
        const T mu = mu_of(i), rs = rstd[i];
        for (int64_t c = c0; c < c1; ++c) {
          aw[c - c0] += dy[i * H + c] * (r[i * H + c] - mu) * rs;
          ab[c - c0] += dy[i * H + c];
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        if (dw) dw[c] = aw[c - c0];
        if (db) db[c] = ab[c - c0];
      }
    }
  }
}

DType compute_of(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

void check_uniform(const char* what, DType ct, std::initializer_list<DType> dts) {
  for (DType d : dts)
    MT_CHECK_SHAPE(d == ct, what, ": CPU kernel needs every buffer in ", dtype_name(ct), ", got ", dtype_name(d));
}

}  // namespace

void norm_fwd_cpu(const NormFwdParams& p) {
  const DType ct = compute_of(p.x_dtype);
  check_uniform("norm_fwd_cpu", ct, {p.x_dtype, p.w_dtype, p.y_dtype});
  MT_CHECK_SHAPE(p.rms || p.mean || !p.rstd, "norm_fwd_cpu: LayerNorm saving rstd must also save mean");
  if (ct == DType::F64)
    fwd<double>(p);
  else
    fwd<float>(p);
}

void norm_bwd_cpu(const NormBwdParams& p) {
  const DType ct = compute_of(p.r_dtype);
  check_uniform("norm_bwd_cpu", ct, {p.r_dtype, p.w_dtype, p.dy_dtype, p.dx ? p.dx_dtype : ct});
  MT_CHECK_SHAPE(p.rstd && (p.rms || p.mean), "norm_bwd_cpu: needs the saved rstd (and mean for LayerNorm)");
  if (ct == DType::F64)
    bwd<double>(p);
  else
    bwd<float>(p);
}

}  // namespace mt::kernels
