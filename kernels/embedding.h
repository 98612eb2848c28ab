// Embedding lookup and its backward (V vocab rows of width D, n ids).
//
//   forward:   out[i, :] = weight[ids[i], :]                 i < n, ids[i] in [0, V)
//   backward:  dW[v, :] = sum_{i : ids[i] == v} dout[i, :]   (dense [V, D]; rows never looked up are 0)
//
// Validation: an id outside [0, V) is a data error. The CPU forward checks every id before writing anything and
// returns the position of the first bad one. The CUDA forward does not stop the kernel: each thread that meets a
// bad id atomicMin's its position into a device flag (bad_pos, initialised by the caller to n) and writes a zero
// row; the op copies that one int64 back (a 8-byte D2H copy + stream sync per call, which is cheap next to the
// lookup; copying all the ids to the host would cost O(n) and a sync too) and throws naming id, position and V.
//
// Backward on CUDA, two paths:
//   default        atomicAdd of every dout element into an f32 accumulator (f64 for f64 weights). Atomics make the
//                  f32 sum order, hence the last bits, run-dependent.
//   deterministic  (p.deterministic, set by the op under core/determinism.h's switch, i.e. `run.deterministic`):
//                  a stable radix sort of the positions by id (cub), then one block per distinct id sums its dout
//                  rows in ascending position order, with no atomics. That is the CPU kernel's order and
//                  accumulator, so the result equals the CPU's bit for bit, every run. Extra memory: the sort's
//                  scratch (embedding_bwd_sort_bytes_cuda), a few times n * 4 bytes.
// Either way a cast follows into the weight dtype when it is bf16 / f16, unless grad_weight is null (the f32 sums
// are the result).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct EmbeddingFwdParams {
  DType dtype = DType::F32;     // weight / out dtype (any float dtype: rows are copied, not converted)
  DType id_dtype = DType::I64;  // I32 or I64
  const void* ids = nullptr;    // [n] contiguous
  int64_t n = 0;
  int64_t V = 0, D = 0;
  const void* weight = nullptr;  // [V, D] contiguous
  void* out = nullptr;           // [n, D] contiguous
  int64_t* bad_pos = nullptr;    // CUDA only: device int64, = n on entry; min position of a bad id on exit
};

struct EmbeddingBwdParams {
  DType dtype = DType::F32;  // grad dtype (CPU: f32 / f64)
  DType id_dtype = DType::I64;
  const void* ids = nullptr;  // [n] contiguous, all in [0, V) (checked by the forward)
  int64_t n = 0;
  int64_t V = 0, D = 0;
  const void* grad_out = nullptr;  // [n, D] contiguous
  void* grad_weight = nullptr;     // [V, D] contiguous, fully written; CUDA, bf16 / f16: null when accum is the result
  void* accum = nullptr;           // CUDA, bf16 / f16 only: f32 [V, D], the sums before they are rounded
  bool deterministic = false;      // CUDA: the sorted, atomic-free path
  void* sort_scratch = nullptr;    // CUDA, deterministic only: embedding_bwd_sort_bytes_cuda(n, V) bytes
};

// Returns the position of the first id outside [0, V), or -1 when all are valid (then out is written).
int64_t embedding_fwd_cpu(const EmbeddingFwdParams& p);
void embedding_bwd_cpu(const EmbeddingBwdParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void embedding_fwd_cuda(const EmbeddingFwdParams& p);
void embedding_bwd_cuda(const EmbeddingBwdParams& p);
// Bytes of sort_scratch the deterministic backward needs for n ids of a vocabulary of V.
size_t embedding_bwd_sort_bytes_cuda(int64_t n, int64_t V);

}  // namespace mt::kernels
