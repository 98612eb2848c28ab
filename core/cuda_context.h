// The one CUDA context object of the process: device, stream, cuBLAS and cuBLASLt handles, a cuBLASLt
// workspace and the device properties. Every kernel in mamba-train runs on stream(). Created on first use.
// Only available in builds with MT_WITH_CUDA.
#pragma once

#if defined(MT_WITH_CUDA)
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace mt {

class CudaContext {
 public:
  // The context for the current device (cudaSetDevice before first use to pick another GPU).
  static CudaContext& get();

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  cublasLtHandle_t cublaslt() const { return cublaslt_; }
  void* lt_workspace() const { return lt_workspace_; }
  size_t lt_workspace_bytes() const { return lt_workspace_bytes_; }
  const cudaDeviceProp& props() const { return props_; }
  int sm_count() const { return props_.multiProcessorCount; }
  std::string describe() const;  // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"

  void synchronize() const;  // wait for stream(); throws on an asynchronous kernel error

 private:
  CudaContext();
  ~CudaContext();
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublaslt_ = nullptr;
  void* lt_workspace_ = nullptr;
  size_t lt_workspace_bytes_ = 0;
  cudaDeviceProp props_{};
};

}  // namespace mt
#endif
