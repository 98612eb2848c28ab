#include "core/cuda_context.h"

#if defined(MT_WITH_CUDA)
#include <cstdio>

#include "core/cuda_check.h"

namespace mt {

namespace detail {
void cuda_fail(cudaError_t st, const char* call, const char* file, int line) {
  ErrorKind kind = st == cudaErrorMemoryAllocation ? ErrorKind::OutOfMemory : ErrorKind::Device;
  throw Error(kind, str("CUDA error ", cudaGetErrorName(st), " (", cudaGetErrorString(st), ") in ", call, " at ", file,
                        ":", line));
}
void cublas_fail(cublasStatus_t st, const char* call, const char* file, int line) {
  throw Error(ErrorKind::Device, str("cuBLAS error ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") in ",
                                     call, " at ", file, ":", line));
}
}  // namespace detail

CudaContext& CudaContext::get() {
  // Leaked on purpose (see allocator.cpp): handles must outlive every static tensor.
  static CudaContext* ctx = new CudaContext();
  return *ctx;
}

CudaContext::CudaContext() {
  int n = 0;
  cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw Error(ErrorKind::Device,
                str("CUDA requested but no GPU is usable (", cudaGetErrorString(st), "); use --device cpu"));
  }
  MT_CUDA_CHECK(cudaGetDevice(&device_));
  MT_CUDA_CHECK(cudaGetDeviceProperties(&props_, device_));
  MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MT_CUBLAS_CHECK(cublasCreate(&cublas_));
  MT_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  MT_CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
  lt_workspace_bytes_ = 32u << 20;  // cuBLASLt's recommendation for Hopper
  MT_CUDA_CHECK(cudaMalloc(&lt_workspace_, lt_workspace_bytes_));
  MT_CUBLAS_CHECK(cublasSetWorkspace(cublas_, lt_workspace_, lt_workspace_bytes_));
}

CudaContext::~CudaContext() = default;

std::string CudaContext::describe() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %.1f GiB)", props_.name, props_.major, props_.minor,
                props_.multiProcessorCount, static_cast<double>(props_.totalGlobalMem) / (1u << 30));
  return buf;
}

void CudaContext::synchronize() const { MT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace mt
#endif
