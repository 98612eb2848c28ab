#include "kernels/pool.h"

#include "core/error.h"

namespace mt::kernels {

namespace {

template <typename T>
void fwd(const PoolParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
#pragma omp parallel for
  for (int64_t b = 0; b < p.B; ++b) {
    double count = 0;
    int64_t last = -1;
    for (int64_t t = 0; t < p.L; ++t) {
      if (!p.mask || p.mask[b * p.L + t] != 0.0f) {
        count += 1;
        last = t;
      }
    }
    for (int64_t d = 0; d < p.D; ++d) {
      double acc = 0;
      int64_t idx = -1;
      for (int64_t t = 0; t < p.L; ++t) {
        if (p.mask && p.mask[b * p.L + t] == 0.0f) continue;
        const double v = x[(b * p.L + t) * p.D + d];
        if (p.mode == PoolMode::Mean) {
          acc += v;
        } else if (p.mode == PoolMode::Max && (idx < 0 || v > acc)) {
          acc = v;
          idx = t;
        }
      }
      if (p.mode == PoolMode::Mean) acc = count > 0 ? acc / count : 0.0;
      if (p.mode == PoolMode::Last) {
        idx = last;
        acc = last >= 0 ? static_cast<double>(x[(b * p.L + last) * p.D + d]) : 0.0;
      }
      if (p.mode == PoolMode::Max && idx < 0) acc = 0.0;
      out[b * p.D + d] = static_cast<T>(acc);
      if (p.index) p.index[b * p.D + d] = idx;
    }
  }
}

template <typename T>
void bwd(const PoolParams& p) {
  const T* g = static_cast<const T*>(p.grad_out);
  T* gx = static_cast<T*>(p.grad_x);
#pragma omp parallel for
  for (int64_t b = 0; b < p.B; ++b) {
    double count = 0;
    for (int64_t t = 0; t < p.L; ++t) count += (!p.mask || p.mask[b * p.L + t] != 0.0f) ? 1 : 0;
    for (int64_t t = 0; t < p.L; ++t) {
      const bool real = !p.mask || p.mask[b * p.L + t] != 0.0f;
      for (int64_t d = 0; d < p.D; ++d) {
        double v = 0;
        if (p.mode == PoolMode::Mean) {
          v = real && count > 0 ? g[b * p.D + d] / count : 0.0;
        } else {
          v = p.index[b * p.D + d] == t ? static_cast<double>(g[b * p.D + d]) : 0.0;
        }
        gx[(b * p.L + t) * p.D + d] = static_cast<T>(v);
      }
    }
  }
}

}  // namespace

void pool_fwd_cpu(const PoolParams& p) {
  if (p.dtype == DType::F64) return fwd<double>(p);
  MT_ASSERT(p.dtype == DType::F32, "pool_fwd_cpu dtype");
  fwd<float>(p);
}

void pool_bwd_cpu(const PoolParams& p) {
  if (p.dtype == DType::F64) return bwd<double>(p);
  MT_ASSERT(p.dtype == DType::F32, "pool_bwd_cpu dtype");
  bwd<float>(p);
}

}  // namespace mt::kernels
