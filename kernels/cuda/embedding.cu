// CUDA embedding. Forward: blocks stride over ids, the threads of a block copy one row (coalesced). Rows are
// copied as raw 2/4/8-byte words, so no dtype conversion happens. Backward: the same layout doing atomicAdd into
// an f32 (f64 for f64) accumulator, or the deterministic path (sort by id, one block per id); see
// kernels/embedding.h for the error flag and both backward paths.
#include <cub/device/device_radix_sort.cuh>

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

// The deterministic path's keys (ids as i32) and values (positions).
template <typename I>
__global__ void sort_input_kernel(const I* ids, int64_t n, int32_t* keys, int32_t* pos) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[i] = static_cast<int32_t>(ids[i]);
    pos[i] = static_cast<int32_t>(i);
  }
}

// keys / pos sorted by id, positions ascending within an id (the sort is stable). The block at the first sorted
// entry of an id writes that id's row: each thread sums its columns over the id's positions in ascending order,
// from 0, as the CPU kernel does.
template <typename G, typename A>
__global__ void sorted_sum_kernel(const int32_t* keys, const int32_t* pos, int64_t n, int64_t D, const G* grad_out,
                                  A* accum) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int32_t v = keys[i];
    if (i > 0 && keys[i - 1] == v) continue;  // not the id's first entry (the same for the whole block)
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      A acc = A(0);
      for (int64_t k = i; k < n && keys[k] == v; ++k)
        acc += static_cast<A>(cuda::load(grad_out + static_cast<int64_t>(pos[k]) * D, j));
      accum[static_cast<int64_t>(v) * D + j] = acc;
    }
  }
}

// The layout of sort_scratch: keys, sorted keys, positions, sorted positions (n i32 each), then cub's scratch.
struct SortScratch {
  int32_t *keys = nullptr, *keys_sorted = nullptr, *pos = nullptr, *pos_sorted = nullptr;
  void* cub_tmp = nullptr;
  size_t cub_bytes = 0, total = 0;
};

constexpr size_t align256(size_t b) { return (b + 255) / 256 * 256; }

int key_bits(int64_t V) {
  int bits = 1;
  while (bits < 31 && (int64_t{1} << bits) < V) ++bits;
  return bits;
}

SortScratch sort_scratch_layout(int64_t n, int64_t V, void* base) {
  SortScratch s;
  const size_t arr = align256(static_cast<size_t>(n) * sizeof(int32_t));
  MT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, s.cub_bytes, static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<int>(n), 0, key_bits(V),
                                                cuda::stream()));
  s.total = 4 * arr + align256(s.cub_bytes);
  if (base != nullptr) {
    char* b = static_cast<char*>(base);
    s.keys = reinterpret_cast<int32_t*>(b);
    s.keys_sorted = reinterpret_cast<int32_t*>(b + arr);
    s.pos = reinterpret_cast<int32_t*>(b + 2 * arr);
    s.pos_sorted = reinterpret_cast<int32_t*>(b + 3 * arr);
    s.cub_tmp = b + 4 * arr;
  }
  return s;
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

size_t embedding_bwd_sort_bytes_cuda(int64_t n, int64_t V) {
  MT_ASSERT(n < (int64_t{1} << 31) && V < (int64_t{1} << 31),
            "embedding_bwd_cuda: deterministic path needs n, V < 2^31");
  return n > 0 ? sort_scratch_layout(n, V, nullptr).total : 0;
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
      if (p.n > 0 && p.D > 0 && p.deterministic) {
        MT_ASSERT(p.sort_scratch != nullptr, "embedding_bwd_cuda: the deterministic path needs its sort scratch");
        const SortScratch s = sort_scratch_layout(p.n, p.V, p.sort_scratch);
        sort_input_kernel<I>
            <<<cuda::grid_for(p.n), 256, 0, cuda::stream()>>>(static_cast<const I*>(p.ids), p.n, s.keys, s.pos);
        MT_CUDA_CHECK_LAUNCH();
        size_t bytes = s.cub_bytes;
        MT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.cub_tmp, bytes, s.keys, s.keys_sorted, s.pos, s.pos_sorted,
                                                      static_cast<int>(p.n), 0, key_bits(p.V), cuda::stream()));
        sorted_sum_kernel<G, A><<<row_grid(p.n), 256, 0, cuda::stream()>>>(
            s.keys_sorted, s.pos_sorted, p.n, p.D, static_cast<const G*>(p.grad_out), static_cast<A*>(acc));
        MT_CUDA_CHECK_LAUNCH();
      } else if (p.n > 0 && p.D > 0) {
        embedding_bwd_kernel<G, A, I><<<row_grid(p.n), 256, 0, cuda::stream()>>>(
            static_cast<const I*>(p.ids), p.n, p.D, static_cast<const G*>(p.grad_out), static_cast<A*>(acc));
        MT_CUDA_CHECK_LAUNCH();
      }
      if constexpr (!std::is_same_v<G, float> && !std::is_same_v<G, double>) {
        if (total > 0 && p.grad_weight != nullptr) {
          cast_kernel<G><<<cuda::grid_for(total), 256, 0, cuda::stream()>>>(static_cast<const float*>(acc),
                                                                            static_cast<G*>(p.grad_weight), total);
          MT_CUDA_CHECK_LAUNCH();
        }
      }
    });
  });
}

}  // namespace mt::kernels
