// Status-code checks for CUDA, cuBLAS(Lt) and NCCL. Each names the failing call, the status and the location.
// Include only from translation units built with MT_WITH_CUDA.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace mt::detail {
[[noreturn]] void cuda_fail(cudaError_t st, const char* call, const char* file, int line);
[[noreturn]] void cublas_fail(cublasStatus_t st, const char* call, const char* file, int line);
}  // namespace mt::detail

#define MT_CUDA_CHECK(call)                                                                \
  do {                                                                                     \
    cudaError_t mt_st_ = (call);                                                           \
    if (mt_st_ != cudaSuccess) ::mt::detail::cuda_fail(mt_st_, #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches bad launch configurations immediately.
#define MT_CUDA_CHECK_LAUNCH() MT_CUDA_CHECK(cudaGetLastError())

#define MT_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                 \
    cublasStatus_t mt_st_ = (call);                                                                    \
    if (mt_st_ != CUBLAS_STATUS_SUCCESS) ::mt::detail::cublas_fail(mt_st_, #call, __FILE__, __LINE__); \
  } while (0)
