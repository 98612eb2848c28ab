// Device-side load/store of any float dtype as the compute type (float, or double for f64 tensors), used by every
// CUDA kernel that is generic over the storage dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "core/cuda_context.h"
#include "core/dtype.h"

namespace mt::cuda {

template <typename T>
struct TypeTag {
  using type = T;
};

template <typename T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};

template <typename T>
__device__ __forceinline__ typename Compute<T>::type load(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ double load<double>(const double* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <>
__device__ __forceinline__ float load<__half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}

template <typename T>
__device__ __forceinline__ T from_compute(typename Compute<T>::type v);
template <>
__device__ __forceinline__ float from_compute<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double from_compute<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_compute<__half>(float v) {
  return __float2half_rn(v);
}

// Call f(TypeTag<T>{}) with T the CUDA storage type of a float dtype.
template <typename F>
void dispatch_float(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(TypeTag<float>{}); return;
    case DType::F64: f(TypeTag<double>{}); return;
    case DType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: f(TypeTag<__half>{}); return;
    default: throw Error(ErrorKind::Shape, str("CUDA kernel needs a float dtype, got ", dtype_name(dt)));
  }
}

inline int grid_for(int64_t n, int block = 256) {
  int64_t g = (n + block - 1) / block;
  int64_t cap = static_cast<int64_t>(CudaContext::get().sm_count()) * 32;
  return static_cast<int>(g < cap ? (g > 0 ? g : 1) : cap);
}

inline cudaStream_t stream() { return CudaContext::get().stream(); }

}  // namespace mt::cuda
