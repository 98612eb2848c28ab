// CPU embedding: row copies for the forward (bytes, so every float dtype works unconverted), and a scatter-add for
// the backward that is parallel over column blocks (each thread owns whole columns of dW, so no two threads touch
// the same element and the sum order over ids is always ascending: deterministic).
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/embedding.h"

namespace mt::kernels {

namespace {

int64_t id_at(const void* ids, DType t, int64_t i) {
  return t == DType::I32 ? static_cast<const int32_t*>(ids)[i] : static_cast<const int64_t*>(ids)[i];
}

template <typename T>
void bwd_typed(const EmbeddingBwdParams& p) {
  const T* g = static_cast<const T*>(p.grad_out);
  T* dw = static_cast<T*>(p.grad_weight);
  std::fill(dw, dw + p.V * p.D, T(0));
  constexpr int64_t kCols = 64;
  const int64_t blocks = (p.D + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (p.n * p.D > 16384 && blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kCols, j1 = std::min(p.D, j0 + kCols);
    for (int64_t i = 0; i < p.n; ++i) {
      const int64_t v = id_at(p.ids, p.id_dtype, i);
      T* row = dw + v * p.D;
      const T* gi = g + i * p.D;
      for (int64_t j = j0; j < j1; ++j) row[j] += gi[j];
    }
  }
}

}  // namespace

int64_t embedding_fwd_cpu(const EmbeddingFwdParams& p) {
  MT_ASSERT(p.id_dtype == DType::I32 || p.id_dtype == DType::I64, "embedding ids dtype");
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t v = id_at(p.ids, p.id_dtype, i);
    if (v < 0 || v >= p.V) return i;
  }
  const size_t row_bytes = static_cast<size_t>(p.D) * dtype_size(p.dtype);
  const char* w = static_cast<const char*>(p.weight);
  char* out = static_cast<char*>(p.out);
#pragma omp parallel for schedule(static) if (p.n * p.D > 65536)
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t v = id_at(p.ids, p.id_dtype, i);
    if (row_bytes) std::memcpy(out + i * row_bytes, w + v * row_bytes, row_bytes);
  }
  return -1;
}

void embedding_bwd_cpu(const EmbeddingBwdParams& p) {
  switch (p.dtype) {
    case DType::F32: return bwd_typed<float>(p);
    case DType::F64: return bwd_typed<double>(p);
    default:
      throw Error(ErrorKind::Internal, str("embedding_bwd_cpu: dtype ", dtype_name(p.dtype), " (expected f32/f64)"));
  }
}

}  // namespace mt::kernels
