// CPU log-softmax and cross-entropy: the formulas of kernels/cross_entropy.h, row by row (OpenMP over rows).
// Sums run in double whatever T is: this is the reference the CUDA kernels are compared against.
#include <cmath>
#include <limits>

#include "core/error.h"
#include "kernels/cross_entropy.h"

namespace mt::kernels {

namespace {

template <typename T>
double row_lse(const T* x, int64_t C) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < C; ++c) m = std::max(m, static_cast<double>(x[c]));
  if (std::isinf(m)) return m;  // all -inf (lse -inf) or some +inf (lse +inf)
  double s = 0.0;
  for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(x[c]) - m);
  return m + std::log(s);
}

template <typename T>
void ls_fwd(const LogSoftmaxParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
#pragma omp parallel for schedule(static) if (p.R * p.C > 16384)
  for (int64_t r = 0; r < p.R; ++r) {
    const T* xr = x + r * p.C;
    T* yr = y + r * p.C;
    const double lse = row_lse(xr, p.C);
    for (int64_t c = 0; c < p.C; ++c) yr[c] = static_cast<T>(static_cast<double>(xr[c]) - lse);
  }
}

template <typename T>
void ls_bwd(const LogSoftmaxParams& p) {
  const T* y = static_cast<const T*>(p.y);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
#pragma omp parallel for schedule(static) if (p.R * p.C > 16384)
  for (int64_t r = 0; r < p.R; ++r) {
    const T* yr = y + r * p.C;
    const T* gr = dy + r * p.C;
    double s = 0.0;
    for (int64_t c = 0; c < p.C; ++c) s += gr[c];
    for (int64_t c = 0; c < p.C; ++c)
      dx[r * p.C + c] = static_cast<T>(static_cast<double>(gr[c]) - std::exp(static_cast<double>(yr[c])) * s);
  }
}

int64_t target_at(const CrossEntropyParams& p, int64_t i) {
  return p.target_dtype == DType::I32 ? static_cast<const int32_t*>(p.targets)[i]
                                      : static_cast<const int64_t*>(p.targets)[i];
}

template <typename T>
void xent_fwd(const CrossEntropyParams& p) {
  const T* x = static_cast<const T*>(p.logits);
  T* lse = static_cast<T*>(p.lse);
  double total = 0.0;
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, count) if (p.N * p.C > 16384)
  for (int64_t i = 0; i < p.N; ++i) {
    const T* xi = x + i * p.C;
    const double l = row_lse(xi, p.C);
    lse[i] = static_cast<T>(l);
    const int64_t t = target_at(p, i);
    if (t == p.ignore_index) continue;
    total += l - static_cast<double>(xi[t]);
    count += 1;
  }
  *static_cast<T*>(p.count) = static_cast<T>(count);
  *static_cast<T*>(p.loss) = static_cast<T>(count > 0 ? total / static_cast<double>(count) : 0.0);
}

template <typename T>
void xent_bwd(const CrossEntropyParams& p) {
  const T* x = static_cast<const T*>(p.logits);
  const T* lse = static_cast<const T*>(p.lse);
  T* dx = static_cast<T*>(p.grad_logits);
  const double count = static_cast<double>(*static_cast<const T*>(p.count));
  const double scale = count > 0 ? static_cast<double>(*static_cast<const T*>(p.grad_loss)) / count : 0.0;
#pragma omp parallel for schedule(static) if (p.N * p.C > 16384)
  for (int64_t i = 0; i < p.N; ++i) {
    const T* xi = x + i * p.C;
    T* di = dx + i * p.C;
    const int64_t t = target_at(p, i);
    if (t == p.ignore_index) {
      for (int64_t c = 0; c < p.C; ++c) di[c] = T(0);
      continue;
    }
    const double l = static_cast<double>(lse[i]);
    for (int64_t c = 0; c < p.C; ++c)
      di[c] = static_cast<T>((std::exp(static_cast<double>(xi[c]) - l) - (c == t ? 1.0 : 0.0)) * scale);
  }
}

[[noreturn]] void bad_dtype(const char* fn, DType t) {
  throw Error(ErrorKind::Internal, str(fn, ": dtype ", dtype_name(t), " (expected f32 or f64)"));
}

}  // namespace

void log_softmax_fwd_cpu(const LogSoftmaxParams& p) {
  if (p.dtype == DType::F32) return ls_fwd<float>(p);
  if (p.dtype == DType::F64) return ls_fwd<double>(p);
  bad_dtype("log_softmax_fwd_cpu", p.dtype);
}

void log_softmax_bwd_cpu(const LogSoftmaxParams& p) {
  if (p.dtype == DType::F32) return ls_bwd<float>(p);
  if (p.dtype == DType::F64) return ls_bwd<double>(p);
  bad_dtype("log_softmax_bwd_cpu", p.dtype);
}

int64_t cross_entropy_fwd_cpu(const CrossEntropyParams& p) {
  MT_ASSERT(p.target_dtype == DType::I32 || p.target_dtype == DType::I64, "cross_entropy targets dtype");
  for (int64_t i = 0; i < p.N; ++i) {
    const int64_t t = target_at(p, i);
    if (t != p.ignore_index && (t < 0 || t >= p.C)) return i;
  }
  if (p.dtype == DType::F32)
    xent_fwd<float>(p);
  else if (p.dtype == DType::F64)
    xent_fwd<double>(p);
  else
    bad_dtype("cross_entropy_fwd_cpu", p.dtype);
  return -1;
}

void cross_entropy_bwd_cpu(const CrossEntropyParams& p) {
  if (p.dtype == DType::F32) return xent_bwd<float>(p);
  if (p.dtype == DType::F64) return xent_bwd<double>(p);
  bad_dtype("cross_entropy_bwd_cpu", p.dtype);
}

}  // namespace mt::kernels
