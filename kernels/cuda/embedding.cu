// CUDA embedding. Forward: blocks stride over ids, the threads of a block copy one row (coalesced). Rows are
// copied as raw 2/4/8-byte words, so no dtype conversion happens. Backward: the same layout doing atomicAdd into
// an f32 (f64 for f64) accumulator; see kernels/embedding.h for the error flag and the determinism note.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/embedding.h"

namespace mt::kernels {

namespace {

template <typename I>
__device__ __forceinline__ int64_t load_id(const void* ids, int64_t i) {
  return static_cast<int64_t>(static_cast<const I*>(ids)[i]);
}

template <typename W, typename I>
__global__ void embedding_fwd_kernel(const I* ids, int64_t n, int64_t V, int64_t D, const W* weight, W* out,
                                     long long* bad_pos) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t v = static_cast<int64_t>(ids[i]);
    W* o = out + i * D;
    if (v < 0 || v >= V) {
      if (threadIdx.x == 0) atomicMin(bad_pos, static_cast<long long>(i));
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) o[j] = W(0);
      continue;
    }
    const W* w = weight + v * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) o[j] = w[j];
  }
}

template <typename G, typename A, typename I>
__global__ void embedding_bwd_kernel(const I* ids, int64_t n, int64_t D, const G* grad_out, A* accum) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t v = static_cast<int64_t>(ids[i]);
    const G* g = grad_out + i * D;
    A* row = accum + v * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) atomicAdd(row + j, static_cast<A>(cuda::load(g, j)));
  }
}

template <typename T>
__global__ void cast_kernel(const float* src, T* dst, int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[e] = cuda::from_compute<T>(src[e]);
}

int row_grid(int64_t rows) {
  const int64_t cap = static_cast<int64_t>(CudaContext::get().sm_count()) * 16;
  return static_cast<int>(std::max<int64_t>(1, std::min(rows, cap)));
}

template <typename F>
void dispatch_ids(DType t, F&& f) {
  if (t == DType::I32) return f(cuda::TypeTag<int32_t>{});
  if (t == DType::I64) return f(cuda::TypeTag<int64_t>{});
  throw Error(ErrorKind::Internal, str("embedding ids must be i32 / i64, got ", dtype_name(t)));
}

}  // namespace

void embedding_fwd_cuda(const EmbeddingFwdParams& p) {
  if (p.n == 0) return;
  MT_ASSERT(p.bad_pos != nullptr, "embedding_fwd_cuda needs the bad-id flag");
  const size_t es = dtype_size(p.dtype);
  dispatch_ids(p.id_dtype, [&](auto itag) {
    using I = typename decltype(itag)::type;
    auto launch = [&](auto wtag) {
      using W = typename decltype(wtag)::type;
      embedding_fwd_kernel<W, I><<<row_grid(p.n), 256, 0, cuda::stream()>>>(
          static_cast<const I*>(p.ids), p.n, p.V, p.D, static_cast<const W*>(p.weight), static_cast<W*>(p.out),
          reinterpret_cast<long long*>(p.bad_pos));
      MT_CUDA_CHECK_LAUNCH();
    };
    if (es == 2)
      launch(cuda::TypeTag<uint16_t>{});
    else if (es == 4)
      launch(cuda::TypeTag<uint32_t>{});
    else
      launch(cuda::TypeTag<uint64_t>{});
  });
}

void embedding_bwd_cuda(const EmbeddingBwdParams& p) {
  const int64_t total = p.V * p.D;
  const bool half = is_half(p.dtype);
  MT_ASSERT(!half || p.accum != nullptr, "embedding_bwd_cuda needs an f32 accumulator for ", dtype_name(p.dtype));
  void* acc = half ? p.accum : p.grad_weight;
  const size_t acc_elem = p.dtype == DType::F64 ? 8 : 4;
  if (total > 0) MT_CUDA_CHECK(cudaMemsetAsync(acc, 0, static_cast<size_t>(total) * acc_elem, cuda::stream()));
  dispatch_ids(p.id_dtype, [&](auto itag) {
    using I = typename decltype(itag)::type;
    cuda::dispatch_float(p.dtype, [&](auto gtag) {
      using G = typename decltype(gtag)::type;
      using A = typename cuda::Compute<G>::type;
      if (p.n > 0 && p.D > 0) {
        embedding_bwd_kernel<G, A, I><<<row_grid(p.n), 256, 0, cuda::stream()>>>(
            static_cast<const I*>(p.ids), p.n, p.D, static_cast<const G*>(p.grad_out), static_cast<A*>(acc));
        MT_CUDA_CHECK_LAUNCH();
      }
      if constexpr (!std::is_same_v<G, float> && !std::is_same_v<G, double>) {
        if (total > 0) {
          cast_kernel<G><<<cuda::grid_for(total), 256, 0, cuda::stream()>>>(static_cast<const float*>(acc),
                                                                            static_cast<G*>(p.grad_weight), total);
          MT_CUDA_CHECK_LAUNCH();
        }
      }
    });
  });
}

}  // namespace mt::kernels
