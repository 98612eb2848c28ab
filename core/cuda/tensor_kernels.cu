#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda/dtype_cuda.cuh"
#include "core/cuda/tensor_kernels.h"
#include "core/random_formulas.h"

namespace mt::cuda {

namespace {

// Any dtype (ints included) to / from double, for the generic copy kernel.
template <typename T>
__device__ __forceinline__ double to_d(T v) {
  return static_cast<double>(v);
}
template <>
__device__ __forceinline__ double to_d<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ double to_d<__half>(__half v) {
  return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T from_d(double v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_d<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}
template <>
__device__ __forceinline__ __half from_d<__half>(double v) {
  return __float2half_rn(static_cast<float>(v));
}
template <>
__device__ __forceinline__ float from_d<float>(double v) {
  return static_cast<float>(v);
}

// Half / single floats convert through float (exact: every bf16 / f16 is a float; float -> bf16 / f16 rounds to
// nearest even once, as the CPU does); anything with a double or an integer goes through double.
template <typename T>
constexpr bool kNarrowFloat = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}

template <typename D, typename S>
__device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>)
    return v;
  else if constexpr (std::is_integral_v<D> && std::is_integral_v<S>)
    return static_cast<D>(v);
  else if constexpr (kNarrowFloat<D> && kNarrowFloat<S>)
    return from_f<D>(to_f(v));
  else
    return from_d<D>(to_d(v));
}

__device__ __forceinline__ int64_t offset_of(int64_t linear, const StridedDesc& d) {
  int64_t off = 0;
  for (int k = d.ndim - 1; k >= 0; --k) {
    int64_t i = linear % d.shape[k];
    linear /= d.shape[k];
    off += i * d.strides[k];
  }
  return off;
}

// 32-bit index arithmetic for views of fewer than 2^31 elements (the common case): much cheaper than 64-bit
// division on the GPU.
__device__ __forceinline__ int64_t offset_of32(uint32_t linear, const StridedDesc& d) {
  int64_t off = 0;
  for (int k = d.ndim - 1; k >= 0; --k) {
    const uint32_t e = static_cast<uint32_t>(d.shape[k]);
    off += static_cast<int64_t>(linear % e) * d.strides[k];
    linear /= e;
  }
  return off;
}

template <typename D, typename S>
__global__ void strided_copy_kernel32(D* dst, StridedDesc dd, const S* src, StridedDesc sd, uint32_t n, bool dst_contig,
                                      bool src_contig) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int64_t od = dst_contig ? i : offset_of32(i, dd);
    const int64_t os = src_contig ? i : offset_of32(i, sd);
    dst[od] = convert<D>(src[os]);
  }
}

// Same-dtype copy of `rows` rows of `row_bytes` contiguous bytes, in V-byte vectors (row starts and strides are
// multiples of V): the slices of the last dimension (x / z out of in_proj, dt / B / C out of x_proj) and their
// gradients' scatter back.
template <typename V>
__global__ void row_copy_kernel(char* dst, int64_t dst_row_bytes, const char* src, int64_t src_row_bytes, uint32_t rows,
                                uint32_t vecs_per_row) {
  const uint32_t n = rows * vecs_per_row;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / vecs_per_row, c = i - r * vecs_per_row;
    *reinterpret_cast<V*>(dst + r * dst_row_bytes + static_cast<int64_t>(c) * sizeof(V)) =
        *reinterpret_cast<const V*>(src + r * src_row_bytes + static_cast<int64_t>(c) * sizeof(V));
  }
}

template <typename D, typename S>
__global__ void strided_copy_kernel(D* dst, StridedDesc dd, const S* src, StridedDesc sd, int64_t n, bool dst_contig,
                                    bool src_contig) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t od = dst_contig ? i : offset_of(i, dd);
    int64_t os = src_contig ? i : offset_of(i, sd);
    dst[od] = convert<D>(src[os]);
  }
}

template <typename F>
void dispatch_any(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(TypeTag<float>{}); return;
    case DType::F64: f(TypeTag<double>{}); return;
    case DType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: f(TypeTag<__half>{}); return;
    case DType::I32: f(TypeTag<int32_t>{}); return;
    case DType::I64: f(TypeTag<int64_t>{}); return;
  }
}

// Drops size-1 dimensions and merges neighbours that are laid out as one in BOTH views (dst and src share the
// shape): a slice of the last dim of [B, L, 2D] becomes rows x columns, a packed tensor one dimension.
void collapse(StridedDesc& a, StridedDesc& b) {
  StridedDesc ra, rb;
  for (int k = 0; k < a.ndim; ++k) {
    if (a.shape[k] == 1) continue;
    const int m = ra.ndim;
    if (m > 0 && ra.strides[m - 1] == a.strides[k] * a.shape[k] && rb.strides[m - 1] == b.strides[k] * b.shape[k]) {
      ra.shape[m - 1] *= a.shape[k];
      rb.shape[m - 1] *= a.shape[k];
      ra.strides[m - 1] = a.strides[k];
      rb.strides[m - 1] = b.strides[k];
      continue;
    }
    ra.shape[m] = rb.shape[m] = a.shape[k];
    ra.strides[m] = a.strides[k];
    rb.strides[m] = b.strides[k];
    ++ra.ndim;
    ++rb.ndim;
  }
  if (ra.ndim == 0) {  // a single element
    ra.ndim = rb.ndim = 1;
    ra.shape[0] = rb.shape[0] = 1;
    ra.strides[0] = rb.strides[0] = 1;
  }
  a = ra;
  b = rb;
}

bool contiguous(const StridedDesc& d) {
  int64_t expect = 1;
  for (int k = d.ndim - 1; k >= 0; --k) {
    if (d.shape[k] != 1 && d.strides[k] != expect) return false;
    expect *= d.shape[k];
  }
  return true;
}

template <typename T>
__global__ void fill_kernel(T* dst, StridedDesc d, int64_t n, double value, bool contig) {
  const T v = from_d<T>(value);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[contig ? i : offset_of(i, d)] = v;
}

template <typename T>
__global__ void uniform_kernel(T* dst, int64_t n, uint64_t seed, uint64_t off, double lo, double hi, bool f64) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_d<T>(rng_uniform(f64, seed, off, static_cast<uint64_t>(i), lo, hi));
}

template <typename T>
__global__ void normal_kernel(T* dst, int64_t n, uint64_t seed, uint64_t off, double mean, double sd, bool f64) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_d<T>(rng_normal(f64, seed, off, static_cast<uint64_t>(i), mean, sd));
}

template <typename T>
__global__ void randint_kernel(T* dst, int64_t n, uint64_t seed, uint64_t off, int64_t lo, int64_t hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_d<T>(static_cast<double>(rng_randint(seed, off, static_cast<uint64_t>(i), lo, hi)));
}

}  // namespace

void strided_copy(void* dst, DType dst_dtype, const StridedDesc& dst_desc_in, const void* src, DType src_dtype,
                  const StridedDesc& src_desc_in, int64_t numel) {
  if (numel == 0) return;
  StridedDesc dst_desc = dst_desc_in, src_desc = src_desc_in;
  collapse(dst_desc, src_desc);
  const bool dc = contiguous(dst_desc), sc = contiguous(src_desc);
  const int64_t es = static_cast<int64_t>(dtype_size(dst_dtype));
  if (dst_dtype == src_dtype && dst_desc.ndim == 2 && dst_desc.strides[1] == 1 && src_desc.strides[1] == 1 &&
      numel < (int64_t{1} << 31)) {
    const int64_t row = dst_desc.shape[1] * es, drow = dst_desc.strides[0] * es, srow = src_desc.strides[0] * es;
    const uintptr_t align = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) |
                            static_cast<uintptr_t>(row) | static_cast<uintptr_t>(drow) | static_cast<uintptr_t>(srow);
    const uint32_t rows = static_cast<uint32_t>(dst_desc.shape[0]);
    auto launch = [&](auto tag, int64_t v) {
      using V = typename decltype(tag)::type;
      const int64_t n = rows * (row / v);
      row_copy_kernel<V><<<grid_for(n), 256, 0, stream()>>>(
          static_cast<char*>(dst), drow, static_cast<const char*>(src), srow, rows, static_cast<uint32_t>(row / v));
      MT_CUDA_CHECK_LAUNCH();
    };
    if (align % 16 == 0) return launch(TypeTag<int4>{}, 16);
    if (align % 8 == 0) return launch(TypeTag<int2>{}, 8);
    if (align % 4 == 0) return launch(TypeTag<int>{}, 4);
    if (align % 2 == 0) return launch(TypeTag<short>{}, 2);
  }
  if (dc && sc && dst_dtype == src_dtype) {
    MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, numel * dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  dispatch_any(dst_dtype, [&](auto tag_D) {
    using D = typename decltype(tag_D)::type;
    dispatch_any(src_dtype, [&](auto tag_S) {
      using S = typename decltype(tag_S)::type;
      if (numel < (int64_t{1} << 31)) {
        strided_copy_kernel32<D, S><<<grid_for(numel), 256, 0, stream()>>>(
            static_cast<D*>(dst), dst_desc, static_cast<const S*>(src), src_desc, static_cast<uint32_t>(numel), dc, sc);
      } else {
        strided_copy_kernel<D, S><<<grid_for(numel), 256, 0, stream()>>>(
            static_cast<D*>(dst), dst_desc, static_cast<const S*>(src), src_desc, numel, dc, sc);
      }
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill(void* dst, DType dtype, const StridedDesc& desc, int64_t numel, double value) {
  if (numel == 0) return;
  const bool c = contiguous(desc);
  dispatch_any(dtype, [&](auto tag_T) {
    using T = typename decltype(tag_T)::type;
    fill_kernel<T><<<grid_for(numel), 256, 0, stream()>>>(static_cast<T*>(dst), desc, numel, value, c);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void fill_uniform(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag_T) {
    using T = typename decltype(tag_T)::type;
    uniform_kernel<T>
        <<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), n, seed, offset, lo, hi, dtype == DType::F64);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void fill_normal(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double mean, double sd) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag_T) {
    using T = typename decltype(tag_T)::type;
    normal_kernel<T>
        <<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), n, seed, offset, mean, sd, dtype == DType::F64);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void fill_randint(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, int64_t lo, int64_t hi) {
  if (n == 0) return;
  dispatch_any(dtype, [&](auto tag_T) {
    using T = typename decltype(tag_T)::type;
    randint_kernel<T><<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), n, seed, offset, lo, hi);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mt::cuda
