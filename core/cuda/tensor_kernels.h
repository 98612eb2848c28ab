// CUDA kernels behind core's Tensor methods (strided copy with dtype conversion, fill, random fills).
// Index arithmetic supports up to kMaxDims dimensions.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::cuda {

constexpr int kMaxDims = 8;

struct StridedDesc {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // elements
};

// dst[i] = convert(src[i]) for every index of the common shape; pointers are at element 0 of each view.
void strided_copy(void* dst, DType dst_dtype, const StridedDesc& dst_desc, const void* src, DType src_dtype,
                  const StridedDesc& src_desc, int64_t numel);
void fill(void* dst, DType dtype, const StridedDesc& desc, int64_t numel, double value);
// Contiguous random fills, same formulas as the CPU versions in tensor.cpp.
void fill_uniform(void* dst, DType dtype, int64_t numel, uint64_t seed, uint64_t offset, double lo, double hi);
void fill_normal(void* dst, DType dtype, int64_t numel, uint64_t seed, uint64_t offset, double mean, double std);
void fill_randint(void* dst, DType dtype, int64_t numel, uint64_t seed, uint64_t offset, int64_t lo, int64_t hi);

}  // namespace mt::cuda
