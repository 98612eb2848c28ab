// Small helpers shared by the differentiable ops: input validation with messages that name the op, and the device
// flag through which CUDA kernels report a bad id or target. Device dispatch: autograd/ops/dispatch.h.
#pragma once

#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/tensor.h"

namespace mt::ops {

// Throw mt::Error(Shape) unless t is defined and floating.
void check_float(const char* op, const char* arg, const Tensor& t);
// Throw unless all tensors share device and dtype (names the op and every tensor).
void check_same(const char* op, const std::vector<const Tensor*>& ts);
// Normalise a possibly negative dim against rank; throws naming the op.
int64_t wrap_dim(const char* op, int64_t dim, int64_t rank);
// Throw mt::Error(Shape) unless t is defined and i32 or i64 (ids, targets).
void check_index(const char* op, const char* arg, const Tensor& t);

// The dtype in which an op writes the gradient of its input t: f32 for a bf16 / f16 copy of an f32 tensor
// (AutogradMeta::grad_may_be_f32, the weights cached_cast gives the GEMMs), else t's own dtype. Ops whose
// backward sums in f32 anyway (GEMMs with an f32 output, the embedding's accumulator) use it to skip rounding to 16
// bits a gradient that the cast's backward would convert straight back.
DType grad_dtype(const Tensor& t);

// Bad ids / targets on CUDA: the kernels record the first bad position in a device int64 (bad_flag(n), n = none)
// and the op reads that one value back (read_flag: -1 when none), a small copy that synchronises the stream once
// per call. element_i64 then fetches the offending value (one element of a packed integer tensor) for the message.
Tensor bad_flag(int64_t n, Device dev);
int64_t read_flag(const Tensor& flag, int64_t n);
int64_t element_i64(const Tensor& packed, int64_t i);

}  // namespace mt::ops
