// CPU GEMM: the GotoBLAS loop structure, in portable C++ the compiler vectorises.
//
//   for each column panel jc (NC columns of C) and depth panel pc (KC of K):
//     pack op(B)[pc:pc+kc, jc:jc+nc] into micro-panels of NR columns ([kc][NR] each, zero padded)
//     parallel over tiles (MC rows x NB columns of the panel):
//       pack alpha * op(A)[rows, pc:pc+kc] into micro-panels of MR rows ([kc][MR] each, zero padded)
//       for each MR x NR micro-tile: acc[MR][NR] = sum_k a[k][r] * b[k][c] in registers, then C += acc
//
// Packing is where the transpose flags are absorbed, so op(A) / op(B) cost the same whatever their layout.
// Accumulation is in T (float or double); the order over k is fixed (panel by panel), so results do not depend
// on the thread count.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/gemm.h"

namespace mt::kernels {

void gemm_check(const GemmParams& p) {
  MT_ASSERT(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 1, "gemm sizes M=", p.M, " N=", p.N, " K=", p.K,
            " batch=", p.batch);
  const int64_t a_cols = p.trans_a ? p.M : p.K, b_cols = p.trans_b ? p.K : p.N;
  MT_ASSERT(p.lda >= std::max<int64_t>(1, a_cols), "gemm lda ", p.lda, " < ", a_cols);
  MT_ASSERT(p.ldb >= std::max<int64_t>(1, b_cols), "gemm ldb ", p.ldb, " < ", b_cols);
  MT_ASSERT(p.ldc >= std::max<int64_t>(1, p.N), "gemm ldc ", p.ldc, " < ", p.N);
  MT_ASSERT(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0, "gemm negative batch stride");
  MT_ASSERT(p.batch == 1 || p.stride_c > 0, "gemm batch of ", p.batch, " outputs with stride 0");
  MT_ASSERT(!p.c_f32 || (is_half(p.dtype) && p.bias == nullptr), "gemm c_f32 needs bf16 / f16 operands, no bias");
}

namespace {

constexpr int64_t kMC = 64;    // rows of A packed per task (64 x 256 floats = 64 KiB, L2-resident)
constexpr int64_t kKC = 256;   // depth of one panel
constexpr int64_t kNC = 2048;  // columns of B packed at once (256 x 2048 floats = 2 MiB)
constexpr int64_t kNB = 256;   // columns of C per task
constexpr int kMR = 4;         // micro-tile rows

template <typename T>
struct Micro {
  static constexpr int NR = 64 / static_cast<int>(sizeof(T));  // 16 floats / 8 doubles: one cache line of B
};

// acc[MR][NR] = sum_k a[k*MR + r] * b[k*NR + c]; then C[r][c] += acc for the valid mr x nr corner.
// acc is only ever indexed by compile-time constants (fully unrolled loops) so it lives in vector registers; the
// ragged edge goes through a separate buffer.
template <typename T>
inline void micro_kernel(int64_t kc, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int64_t ldc,
                         int mr, int nr) {
  constexpr int NR = Micro<T>::NR;
  T acc[kMR][NR];
#pragma GCC unroll 4
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) acc[r][j] = T(0);
  for (int64_t k = 0; k < kc; ++k) {
    const T* bk = b + k * NR;
    const T* ak = a + k * kMR;
#pragma GCC unroll 4
    for (int r = 0; r < kMR; ++r) {
      const T av = ak[r];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[r][j] += av * bk[j];
    }
  }
  if (mr == kMR && nr == NR) {
#pragma GCC unroll 4
    for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) c[r * ldc + j] += acc[r][j];
  } else {
    T edge[kMR][NR];
#pragma GCC unroll 4
    for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) edge[r][j] = acc[r][j];
    for (int r = 0; r < mr; ++r)
      for (int j = 0; j < nr; ++j) c[r * ldc + j] += edge[r][j];
  }
}

// op(B)[pc + k, jc + j] for k < kc, j < nc into panels of NR columns: dst[(j / NR) * kc * NR + k * NR + j % NR].
template <typename T>
void pack_b(const GemmParams& p, const T* B, int64_t pc, int64_t kc, int64_t jc, int64_t nc, T* dst) {
  constexpr int NR = Micro<T>::NR;
  const int64_t panels = (nc + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (panels * kc > 4096)
  for (int64_t jp = 0; jp < panels; ++jp) {
    T* d = dst + jp * kc * NR;
    const int64_t j0 = jc + jp * NR, nr = std::min<int64_t>(NR, jc + nc - j0);
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t kk = pc + k;
      for (int64_t j = 0; j < nr; ++j) d[k * NR + j] = p.trans_b ? B[(j0 + j) * p.ldb + kk] : B[kk * p.ldb + j0 + j];
      for (int64_t j = nr; j < NR; ++j) d[k * NR + j] = T(0);
    }
  }
}

// alpha * op(A)[i0 + i, pc + k] for i < mc, k < kc into panels of MR rows: dst[(i / MR) * kc * MR + k * MR + i % MR].
template <typename T>
void pack_a(const GemmParams& p, const T* A, int64_t i0, int64_t mc, int64_t pc, int64_t kc, T alpha, T* dst) {
  for (int64_t ip = 0; ip < (mc + kMR - 1) / kMR; ++ip) {
    T* d = dst + ip * kc * kMR;
    const int64_t r0 = i0 + ip * kMR, mr = std::min<int64_t>(kMR, i0 + mc - r0);
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t kk = pc + k;
      for (int64_t r = 0; r < mr; ++r)
        d[k * kMR + r] = alpha * (p.trans_a ? A[kk * p.lda + r0 + r] : A[(r0 + r) * p.lda + kk]);
      for (int64_t r = mr; r < kMR; ++r) d[k * kMR + r] = T(0);
    }
  }
}

template <typename T>
void gemm_one(const GemmParams& p, const T* A, const T* B, T* C, const T* bias, std::vector<T>& bpack) {
  constexpr int NR = Micro<T>::NR;
  const int64_t M = p.M, N = p.N, K = p.K, ldc = p.ldc;
  const T beta = static_cast<T>(p.beta), alpha = static_cast<T>(p.alpha);

  // C = beta * C (beta == 0: overwrite, never read C).
#pragma omp parallel for schedule(static) if (M * N > 16384)
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (p.beta == 0.0) {
      for (int64_t j = 0; j < N; ++j) c[j] = T(0);
    } else if (p.beta != 1.0) {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }

  if (K > 0 && p.alpha != 0.0) {
    for (int64_t jc = 0; jc < N; jc += kNC) {
      const int64_t nc = std::min(kNC, N - jc);
      for (int64_t pc = 0; pc < K; pc += kKC) {
        const int64_t kc = std::min(kKC, K - pc);
        pack_b(p, B, pc, kc, jc, nc, bpack.data());
        const int64_t mtiles = (M + kMC - 1) / kMC, ntiles = (nc + kNB - 1) / kNB;
#pragma omp parallel if (mtiles * ntiles > 1 && M * nc * kc > 32768)
        {
          std::vector<T> apack(static_cast<size_t>(kMC * kc));
#pragma omp for schedule(static)
          for (int64_t t = 0; t < mtiles * ntiles; ++t) {
            const int64_t i0 = (t / ntiles) * kMC, mc = std::min(kMC, M - i0);
            const int64_t j0 = (t % ntiles) * kNB, nb = std::min(kNB, nc - j0);
            pack_a(p, A, i0, mc, pc, kc, alpha, apack.data());
            for (int64_t jr = 0; jr < nb; jr += NR) {
              const T* bp = bpack.data() + ((j0 + jr) / NR) * kc * NR;
              const int nr = static_cast<int>(std::min<int64_t>(NR, nb - jr));
              for (int64_t ir = 0; ir < mc; ir += kMR) {
                const int mr = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
                micro_kernel<T>(kc, apack.data() + (ir / kMR) * kc * kMR, bp, C + (i0 + ir) * ldc + jc + j0 + jr, ldc,
                                mr, nr);
              }
            }
          }
        }
      }
    }
  }

  if (bias) {
#pragma omp parallel for schedule(static) if (M * N > 16384)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] += bias[j];
  }
}

template <typename T>
void gemm_typed(const GemmParams& p) {
  constexpr int NR = Micro<T>::NR;
  const int64_t nc_max = std::min(kNC, p.N), kc_max = std::min(kKC, p.K);
  std::vector<T> bpack(static_cast<size_t>(std::max<int64_t>(1, ((nc_max + NR - 1) / NR) * NR * kc_max)));
  for (int64_t b = 0; b < p.batch; ++b) {
    gemm_one<T>(p, static_cast<const T*>(p.A) + b * p.stride_a, static_cast<const T*>(p.B) + b * p.stride_b,
                static_cast<T*>(p.C) + b * p.stride_c, static_cast<const T*>(p.bias), bpack);
  }
}

}  // namespace

void gemm_cpu(const GemmParams& p) {
  gemm_check(p);
  if (p.M == 0 || p.N == 0) return;
  switch (p.dtype) {
    case DType::F32: return gemm_typed<float>(p);
    case DType::F64: return gemm_typed<double>(p);
    default: throw Error(ErrorKind::Internal, str("gemm_cpu: dtype ", dtype_name(p.dtype), " (expected f32 or f64)"));
  }
}

}  // namespace mt::kernels
