// CUDA GEMM through cuBLASLt (f32 / bf16 / f16 operands, f32 accumulation) and cuBLAS (f64).
//
// Row-major -> column-major: a row-major [R, C] matrix with row stride ld is, read column-major, the [C, R] matrix
// with the same ld. So the row-major product C[M,N] = op(A) op(B) is computed as the column-major product
//   C^T[N, M] = op(B)^T[N, K] @ op(A)^T[K, M]
// i.e. cuBLAS's "A" is our B (transposed iff trans_b) and cuBLAS's "B" is our A (transposed iff trans_a); m = N,
// n = M. Nothing is copied.
//
// Precision: f32 operands use CUBLAS_COMPUTE_32F exactly (never TF32: fp32 is our reference precision);
// bf16 / f16 operands use CUBLAS_COMPUTE_32F with tensor cores; f64 uses cublasDgemmStridedBatched.
// Bias: cuBLASLt's BIAS epilogue (bias[N] is a vector along column-major D's rows = our columns) when the
// heuristic offers an algorithm for it; otherwise (f64, K == 0, no algorithm) a separate broadcast-add kernel.
//
// Algorithm choice: cublasLtMatmulAlgoGetHeuristic is queried once per distinct problem (sizes, strides, flags,
// pointer alignments) and cached; the cache is guarded by a mutex (one process drives one GPU).
#include <map>
#include <mutex>
#include <vector>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/gemm.h"

namespace mt::kernels {

namespace {

// C_b[i, j] = (beta == 0 ? 0 : beta * C_b[i, j]) + (bias ? bias[j] : 0), for every batch b. Used for K == 0 and
// for the bias where the epilogue is not available.
template <typename T>
__global__ void scale_add_bias_kernel(T* C, int64_t ldc, int64_t stride_c, int64_t M, int64_t N, int64_t batch,
                                      double beta, const T* bias) {
  using Acc = typename cuda::Compute<T>::type;
  const int64_t total = batch * M * N;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % N, i = (e / N) % M, b = e / (M * N);
    T* c = C + b * stride_c + i * ldc + j;
    Acc v = beta == 0.0 ? Acc(0) : static_cast<Acc>(beta) * cuda::load(c, 0);
    if (bias) v += cuda::load(bias, j);
    *c = cuda::from_compute<T>(v);
  }
}

void scale_add_bias(const GemmParams& p, double beta, const void* bias) {
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t total = p.batch * p.M * p.N;
    scale_add_bias_kernel<T><<<cuda::grid_for(total), 256, 0, cuda::stream()>>>(
        static_cast<T*>(p.C), p.ldc, p.stride_c, p.M, p.N, p.batch, beta, static_cast<const T*>(bias));
    MT_CUDA_CHECK_LAUNCH();
  });
}

void check_int(int64_t v, const char* what) {
  MT_CHECK(v <= 0x7fffffff, ErrorKind::Shape, "gemm_cuda: ", what, " = ", v, " exceeds the 32-bit limit of cuBLAS");
}

void gemm_f64(const GemmParams& p) {
  for (int64_t v : {p.M, p.N, p.K, p.lda, p.ldb, p.ldc, p.batch}) check_int(v, "size");
  const double alpha = p.alpha, beta = p.beta;
  cublasHandle_t h = CudaContext::get().cublas();
  MT_CUBLAS_CHECK(cublasSetStream(h, cuda::stream()));
  MT_CUBLAS_CHECK(cublasDgemmStridedBatched(
      h, p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(p.N),
      static_cast<int>(p.M), static_cast<int>(p.K), &alpha, static_cast<const double*>(p.B), static_cast<int>(p.ldb),
      p.stride_b, static_cast<const double*>(p.A), static_cast<int>(p.lda), p.stride_a, &beta,
      static_cast<double*>(p.C), static_cast<int>(p.ldc), p.stride_c, static_cast<int>(p.batch)));
  if (p.bias) scale_add_bias(p, 1.0, p.bias);
}

// Largest power of two (<= 256) dividing the address and, for batches, the byte stride between matrices.
uint32_t alignment(const void* ptr, int64_t stride_elems, size_t elem, int64_t batch) {
  uint64_t bits = reinterpret_cast<uint64_t>(ptr);
  if (batch > 1) bits |= static_cast<uint64_t>(stride_elems) * elem;
  uint32_t a = 256;
  while (a > 1 && (bits % a) != 0) a >>= 1;
  return a;
}

// RAII for the cuBLASLt descriptors (they must be destroyed on every path, exceptions included).
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void make_layout(cublasLtMatrixLayout_t* out, cudaDataType_t dt, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                 int64_t stride) {
  MT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(out, dt, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    MT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    MT_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
}

struct CacheEntry {
  bool found = false;
  cublasLtMatmulHeuristicResult_t result{};
};

std::mutex g_cache_mutex;
std::map<std::vector<int64_t>, CacheEntry> g_cache;

// Build the descriptors for p (with or without the bias epilogue) and find an algorithm; false if none.
bool lt_try(const GemmParams& p, bool with_bias, LtDescs& d, cublasLtMatmulHeuristicResult_t& result) {
  const cudaDataType_t dt = p.dtype == DType::F32 ? CUDA_R_32F : p.dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const size_t elem = dtype_size(p.dtype);
  MT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (with_bias) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    int32_t bias_type = dt;
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof p.bias));
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  }
  // cuBLAS "A" = our B: column-major [N, K] (or [K, N] transposed); cuBLAS "B" = our A: [K, M] (or [M, K]).
  make_layout(&d.a, dt, p.trans_b ? p.K : p.N, p.trans_b ? p.N : p.K, p.ldb, p.batch, p.stride_b);
  make_layout(&d.b, dt, p.trans_a ? p.M : p.K, p.trans_a ? p.K : p.M, p.lda, p.batch, p.stride_a);
  make_layout(&d.c, p.c_f32 ? CUDA_R_32F : dt, p.N, p.M, p.ldc, p.batch, p.stride_c);

  const uint32_t al_a = alignment(p.B, p.stride_b, elem, p.batch), al_b = alignment(p.A, p.stride_a, elem, p.batch);
  const uint32_t al_c = alignment(p.C, p.stride_c, p.c_f32 ? sizeof(float) : elem, p.batch);
  const uint64_t ws = CudaContext::get().lt_workspace_bytes();
  std::vector<int64_t> key = {static_cast<int64_t>(p.dtype),
                              p.trans_a,
                              p.trans_b,
                              p.M,
                              p.N,
                              p.K,
                              p.batch,
                              p.lda,
                              p.ldb,
                              p.ldc,
                              p.stride_a,
                              p.stride_b,
                              p.stride_c,
                              al_a,
                              al_b,
                              al_c,
                              with_bias ? static_cast<int64_t>(alignment(p.bias, 0, elem, 1)) : -1,
                              CudaContext::get().device(),
                              p.c_f32};
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) {
      result = it->second.result;
      return it->second.found;
    }
  }
  MT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
  int count = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(CudaContext::get().cublaslt(), d.op, d.a, d.b, d.c, d.c, d.pref, 1,
                                                     &result, &count);
  const bool found = st == CUBLAS_STATUS_SUCCESS && count > 0;
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) MT_CUBLAS_CHECK(st);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  g_cache[key] = CacheEntry{found, result};
  return found;
}

void gemm_lt(const GemmParams& p) {
  check_int(p.batch, "batch");
  const float alpha = static_cast<float>(p.alpha), beta = static_cast<float>(p.beta);
  cublasLtMatmulHeuristicResult_t result{};
  // First choice: bias fused as the epilogue. Fallback: plain product then the broadcast-add kernel.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool with_bias = p.bias != nullptr && attempt == 0;
    if (p.bias == nullptr && attempt == 1) break;
    LtDescs d;
    if (!lt_try(p, with_bias, d, result)) continue;
    MT_CUBLAS_CHECK(cublasLtMatmul(CudaContext::get().cublaslt(), d.op, &alpha, p.B, d.a, p.A, d.b, &beta, p.C, d.c,
                                   p.C, d.c, &result.algo, CudaContext::get().lt_workspace(),
                                   CudaContext::get().lt_workspace_bytes(), cuda::stream()));
    if (p.bias && !with_bias) scale_add_bias(p, 1.0, p.bias);
    return;
  }
  throw Error(ErrorKind::Device,
              str("gemm_cuda: cuBLASLt found no algorithm for ", dtype_name(p.dtype), p.c_f32 ? " (f32 C)" : "",
                  " M=", p.M, " N=", p.N, " K=", p.K, " batch=", p.batch, " trans_a=", p.trans_a,
                  " trans_b=", p.trans_b, " lda=", p.lda, " ldb=", p.ldb, " ldc=", p.ldc));
}

}  // namespace

void gemm_cuda(const GemmParams& p) {
  gemm_check(p);
  if (p.M == 0 || p.N == 0) return;
  if (p.K == 0 || p.alpha == 0.0) {  // no product: C = beta * C + bias
    GemmParams q = p;
    if (p.c_f32) q.dtype = DType::F32;  // only C is touched
    scale_add_bias(q, p.beta, p.bias);
    return;
  }
  if (p.dtype == DType::F64) return gemm_f64(p);
  MT_CHECK(p.dtype == DType::F32 || p.dtype == DType::BF16 || p.dtype == DType::F16, ErrorKind::Internal,
           "gemm_cuda: dtype ", dtype_name(p.dtype));
  gemm_lt(p);
}

}  // namespace mt::kernels
