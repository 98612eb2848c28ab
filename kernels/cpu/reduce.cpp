// CPU reference for the sum reduction (kernels/reduce.h): double accumulators, OpenMP over output elements.
#include "kernels/reduce.h"

#include "core/error.h"

namespace mt::kernels {

namespace {

template <typename T>
void reduce_sum(const ReduceParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int64_t O = p.outer, R = p.reduce, I = p.inner;
  const bool big = O * R * I >= (1 << 15);
  if (I == 1) {
    // Rows: y[o] = scale * sum_r x[o, r].
#pragma omp parallel for schedule(static) if (big && O > 1)
    for (int64_t o = 0; o < O; ++o) {
      const T* row = x + o * R;
      double acc = 0.0;
      for (int64_t r = 0; r < R; ++r) acc += static_cast<double>(row[r]);
      y[o] = static_cast<T>(acc * p.scale);
    }
    return;
  }
  // Columns: y[o, i] = scale * sum_r x[o, r, i]. Work items are (o, chunk of i) so that a leading-dim reduction
  // (outer == 1, e.g. a bias gradient) still spreads over threads; each r reads a contiguous run of x.
  constexpr int64_t kChunk = 256;
  const int64_t chunks = (I + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (big && O * chunks > 1)
  for (int64_t t = 0; t < O * chunks; ++t) {
    const int64_t o = t / chunks, i0 = (t % chunks) * kChunk;
    const int64_t len = I - i0 < kChunk ? I - i0 : kChunk;
    double acc[kChunk];
    for (int64_t i = 0; i < len; ++i) acc[i] = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      const T* run = x + (o * R + r) * I + i0;
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(run[i]);
    }
    for (int64_t i = 0; i < len; ++i) y[o * I + i0 + i] = static_cast<T>(acc[i] * p.scale);
  }
}

}  // namespace

void reduce_sum_fwd_cpu(const ReduceParams& p) {
  switch (p.dtype) {
    case DType::F32: return reduce_sum<float>(p);
    case DType::F64: return reduce_sum<double>(p);
    default:
      throw Error(ErrorKind::Internal,
                  str("reduce_sum_fwd_cpu: CPU kernel takes f32 or f64, got ", dtype_name(p.dtype)));
  }
}

}  // namespace mt::kernels
