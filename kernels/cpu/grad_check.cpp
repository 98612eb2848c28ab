#include "kernels/grad_check.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace mt::kernels {

namespace {

// An all-ones exponent field means inf or NaN; the bit test cannot be folded away by any optimisation flag.
constexpr uint16_t kBf16ExpMask = 0x7f80u;
constexpr uint16_t kF16ExpMask = 0x7c00u;

template <typename T>
bool all_finite(const T* g, int64_t n) {
  int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
  for (int64_t i = 0; i < n; ++i) bad |= std::isfinite(g[i]) ? 0 : 1;
  return bad == 0;
}

bool all_finite_16(const uint16_t* g, int64_t n, uint16_t mask) {
  int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
  for (int64_t i = 0; i < n; ++i) bad |= (g[i] & mask) == mask ? 1 : 0;
  return bad == 0;
}

// Sums of squares in fixed chunks whose partial sums are added in chunk order: the result does not depend on
// the thread count or on scheduling, so the clip factor (and with it every parameter) is bit-reproducible and a
// resumed run matches an uninterrupted one exactly.
template <typename Load>
double chunked_sum_squares(int64_t n, Load load) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
    double s = 0;
    for (int64_t i = c * kChunk; i < end; ++i) {
      const double v = load(i);
      s += v * v;
    }
    part[c] = s;
  }
  double s = 0;
  for (double v : part) s += v;
  return s;
}

template <typename T>
double sum_squares(const T* g, int64_t n) {
  return chunked_sum_squares(n, [g](int64_t i) { return static_cast<double>(g[i]); });
}

template <typename Conv>
double sum_squares_16(const uint16_t* g, int64_t n, Conv conv) {
  return chunked_sum_squares(n, [g, conv](int64_t i) { return static_cast<double>(conv(g[i])); });
}

[[noreturn]] void bad_dtype(const char* fn, DType dt) {
  throw Error(ErrorKind::Shape, str(fn, ": gradient dtype ", dtype_name(dt), " (expected f32, f64, bf16 or f16)"));
}

}  // namespace

bool grad_all_finite_cpu(const GradBuffer& g) {
  if (g.n == 0) return true;
  switch (g.dtype) {
    case DType::F32: return all_finite(static_cast<const float*>(g.data), g.n);
    case DType::F64: return all_finite(static_cast<const double*>(g.data), g.n);
    case DType::BF16: return all_finite_16(static_cast<const uint16_t*>(g.data), g.n, kBf16ExpMask);
    case DType::F16: return all_finite_16(static_cast<const uint16_t*>(g.data), g.n, kF16ExpMask);
    default: bad_dtype("grad_all_finite_cpu", g.dtype);
  }
}

double grad_sum_squares_cpu(const GradBuffer& g) {
  if (g.n == 0) return 0.0;
  switch (g.dtype) {
    case DType::F32: return sum_squares(static_cast<const float*>(g.data), g.n);
    case DType::F64: return sum_squares(static_cast<const double*>(g.data), g.n);
    case DType::BF16:
      return sum_squares_16(static_cast<const uint16_t*>(g.data), g.n, [](uint16_t b) { return bf16_to_float(b); });
    case DType::F16:
      return sum_squares_16(static_cast<const uint16_t*>(g.data), g.n, [](uint16_t b) { return f16_to_float(b); });
    default: bad_dtype("grad_sum_squares_cpu", g.dtype);
  }
}

}  // namespace mt::kernels
