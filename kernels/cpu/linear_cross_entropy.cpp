// CPU cross-entropy fused with the LM head (kernels/linear_cross_entropy.h): the chunk loop with gemm_cpu for the three
// products and a row loop (OpenMP over rows, sums in double) for the log-sum-exp, the loss and P.
#include "kernels/linear_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "kernels/gemm.h"

namespace mt::kernels {

namespace {

int64_t target_of(const LinearCrossEntropyParams& p, int64_t i) {
  return p.target_dtype == DType::I32 ? static_cast<const int32_t*>(p.targets)[i]
                                      : static_cast<const int64_t*>(p.targets)[i];
}

template <typename T>
void run(const LinearCrossEntropyParams& p) {
  T* x = static_cast<T*>(p.scratch);
  T* row_loss = static_cast<T*>(p.row_loss);
  const bool grad = p.dh != nullptr;
  const double inv_count = p.count > 0 ? 1.0 / static_cast<double>(p.count) : 0.0;
  for (int64_t r0 = 0; r0 < p.N; r0 += p.chunk) {
    const int64_t n = std::min(p.chunk, p.N - r0);
    const LinearCrossEntropyGemms gm = linear_cross_entropy_gemms(p, r0, n);
    gemm_cpu(gm.logits);
#pragma omp parallel for schedule(static) if (n * p.V > 16384)
    for (int64_t i = 0; i < n; ++i) {
      T* xi = x + i * p.V;
      const int64_t t = target_of(p, r0 + i);
      const bool valid = t != p.ignore_index;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < p.V; ++c) m = std::max(m, static_cast<double>(xi[c]));
      double s = 0.0;
      for (int64_t c = 0; c < p.V; ++c) s += std::exp(static_cast<double>(xi[c]) - m);
      const double lse = m + std::log(s);
      row_loss[r0 + i] = static_cast<T>(valid ? lse - static_cast<double>(xi[t]) : 0.0);
      if (!grad) continue;
      for (int64_t c = 0; c < p.V; ++c) {
        const double pc = valid ? (std::exp(static_cast<double>(xi[c]) - lse) - (c == t ? 1.0 : 0.0)) * inv_count : 0.0;
        xi[c] = static_cast<T>(pc);
      }
    }
    if (!grad) continue;
    gemm_cpu(gm.dh);
    gemm_cpu(gm.dweight);
  }
  double total = 0.0;  // fixed order
  for (int64_t i = 0; i < p.N; ++i) total += static_cast<double>(row_loss[i]);
  *static_cast<T*>(p.loss) = static_cast<T>(total * inv_count);
}

}  // namespace

LinearCrossEntropyGemms linear_cross_entropy_gemms(const LinearCrossEntropyParams& p, int64_t r0, int64_t n) {
  const size_t esz = dtype_size(p.dtype), csz = p.dtype == DType::F64 ? sizeof(double) : sizeof(float);
  const char* h = static_cast<const char*>(p.h) + static_cast<size_t>(r0 * p.H) * esz;
  LinearCrossEntropyGemms g;
  g.logits.dtype = p.dtype;
  g.logits.trans_b = true;
  g.logits.M = n;
  g.logits.N = p.V;
  g.logits.K = p.H;
  g.logits.A = h;
  g.logits.lda = p.H;
  g.logits.B = p.weight;
  g.logits.ldb = p.H;
  g.logits.C = p.scratch;
  g.logits.ldc = p.V;

  g.dh.dtype = p.dtype;
  g.dh.c_f32 = is_half(p.dtype);
  g.dh.M = n;
  g.dh.N = p.H;
  g.dh.K = p.V;
  g.dh.A = p.scratch;
  g.dh.lda = p.V;
  g.dh.B = p.weight;
  g.dh.ldb = p.H;
  g.dh.C = p.dh ? static_cast<char*>(p.dh) + static_cast<size_t>(r0 * p.H) * csz : nullptr;
  g.dh.ldc = p.H;

  g.dweight.dtype = p.dtype;
  g.dweight.c_f32 = is_half(p.dtype);
  g.dweight.trans_a = true;
  g.dweight.M = p.V;
  g.dweight.N = p.H;
  g.dweight.K = n;
  g.dweight.A = p.scratch;
  g.dweight.lda = p.V;
  g.dweight.B = h;
  g.dweight.ldb = p.H;
  g.dweight.C = p.dweight;
  g.dweight.ldc = p.H;
  g.dweight.beta = r0 == 0 ? 0.0 : 1.0;
  return g;
}

void linear_cross_entropy_cpu(const LinearCrossEntropyParams& p) {
  MT_ASSERT(p.N >= 1 && p.H >= 1 && p.V >= 1 && p.chunk >= 1 && p.chunk <= p.N && p.count >= 0,
            "linear_cross_entropy sizes N=", p.N, " H=", p.H, " V=", p.V, " chunk=", p.chunk, " count=", p.count);
  MT_ASSERT((p.dh == nullptr) == (p.dweight == nullptr), "linear_cross_entropy: dh and dweight go together");
  switch (p.dtype) {
    case DType::F32: return run<float>(p);
    case DType::F64: return run<double>(p);
    default:
      throw Error(ErrorKind::Internal,
                  str("linear_cross_entropy_cpu: dtype ", dtype_name(p.dtype), " (expected f32 or f64)"));
  }
}

}  // namespace mt::kernels
