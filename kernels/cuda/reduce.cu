// CUDA sum reduction over the middle dim of a packed [outer, R, inner] tensor (kernels/reduce.h).
//
// inner == 1 (rows):   R <= 512: one warp per row.  Otherwise one 256-thread block per row; when there are few
//                      rows and they are long (a full reduction of a big tensor) each row is split over several
//                      blocks that write partial sums, and a second warp-per-row pass adds the partials.
// inner > 1 (columns): 32 x 16 thread blocks; the 32 lanes of a warp read 32 consecutive columns (coalesced), the
//                      16 warps split R, then shared memory adds the 16 partial sums. When that leaves the GPU
//                      mostly idle (outer * inner small, R large) R is also split over blocks (grid.z) into a
//                      partial buffer, and a second column pass adds the splits.
// Accumulators are float (double for f64); no atomics, so every result is bitwise reproducible.
#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/reduce.h"

namespace mt::kernels {

namespace {

using cuda::Compute;
using cuda::from_compute;
using cuda::load;

constexpr int kRowBlock = 256;
constexpr int kColX = 32, kColY = 16;
constexpr int64_t kWarpRowMax = 512;  // rows up to this length use one warp each

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum of v over a block of kRowBlock threads; the result is valid in thread 0. Safe to call repeatedly.
template <typename A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ double raw[kRowBlock / 32];
  A* part = reinterpret_cast<A*>(raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = threadIdx.x < kRowBlock / 32 ? part[lane] : A(0);
  if (warp == 0) v = warp_sum(v);
  __syncthreads();  // part[] is reused by the next call
  return v;
}

// Out is the storage type of the result (the tensor's dtype, or the accumulator type for partial sums).
template <typename Out, typename A>
__device__ __forceinline__ Out store_as(A v) {
  if constexpr (std::is_same_v<Out, A>) {
    return v;
  } else {
    return from_compute<Out>(v);
  }
}

// y[row] = scale * sum_{c < cols} x[row * cols + c], one warp per row.
template <typename In, typename Out, typename A>
__global__ void row_warp_kernel(const In* __restrict__ x, Out* __restrict__ y, int64_t rows, int64_t cols, A scale) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + (threadIdx.x >> 5); row < rows;
       row += warps) {
    const In* xr = x + row * cols;
    A acc = A(0);
    for (int64_t c = lane; c < cols; c += 32) acc += static_cast<A>(load(xr, c));
    acc = warp_sum(acc);
    if (lane == 0) y[row] = store_as<Out>(acc * scale);
  }
}

// Work item t = row * splits + s sums columns [s * chunk, min(cols, (s + 1) * chunk)) of row `row` into y[t].
// With splits == 1 that is y[row] = scale * (whole row).
template <typename In, typename Out, typename A>
__global__ void row_block_kernel(const In* __restrict__ x, Out* __restrict__ y, int64_t rows, int64_t cols,
                                 int64_t splits, int64_t chunk, A scale) {
  for (int64_t t = blockIdx.x; t < rows * splits; t += gridDim.x) {
    const int64_t row = t / splits, s = t % splits;
    const int64_t c0 = s * chunk, c1 = c0 + chunk < cols ? c0 + chunk : cols;
    const In* xr = x + row * cols;
    A acc = A(0);
    for (int64_t c = c0 + threadIdx.x; c < c1; c += kRowBlock) acc += static_cast<A>(load(xr, c));
    acc = block_sum(acc);
    if (threadIdx.x == 0) y[t] = store_as<Out>(acc * scale);
  }
}

// y[z, o, i] = scale * sum over r in split z (r in [z * rchunk, min(R, (z + 1) * rchunk))) of x[o, r, i].
// Block (kColX, kColY); grid (ceil(inner / kColX), min(outer, 65535), splits); grid-stride over o.
template <typename In, typename Out, typename A>
__global__ void col_kernel(const In* __restrict__ x, Out* __restrict__ y, int64_t outer, int64_t R, int64_t inner,
                           int64_t rchunk, A scale) {
  __shared__ double raw[kColY * (kColX + 1)];
  A* part = reinterpret_cast<A*>(raw);
  const int64_t i = blockIdx.x * static_cast<int64_t>(kColX) + threadIdx.x;
  const int64_t z = blockIdx.z;
  const int64_t r0 = z * rchunk, r1 = r0 + rchunk < R ? r0 + rchunk : R;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    A acc = A(0);
    if (i < inner) {
      const In* xo = x + o * R * inner + i;
      for (int64_t r = r0 + threadIdx.y; r < r1; r += kColY) acc += static_cast<A>(load(xo, r * inner));
    }
    part[threadIdx.y * (kColX + 1) + threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner) {
      A s = A(0);
      for (int k = 0; k < kColY; ++k) s += part[k * (kColX + 1) + threadIdx.x];
      y[(z * outer + o) * inner + i] = store_as<Out>(s * scale);
    }
    __syncthreads();
  }
}

Tensor workspace(int64_t n, bool f64) {
  return Tensor::empty({n}, f64 ? DType::F64 : DType::F32, Device::cuda(CudaContext::get().device()));
}

template <typename In, typename Out, typename A>
void launch_rows_warp(const In* x, Out* y, int64_t rows, int64_t cols, A scale) {
  const int warps_per_block = kRowBlock / 32;
  int64_t blocks = (rows + warps_per_block - 1) / warps_per_block;
  const int64_t cap = static_cast<int64_t>(CudaContext::get().sm_count()) * 32;
  blocks = blocks < cap ? blocks : cap;
  row_warp_kernel<In, Out, A><<<static_cast<int>(blocks), kRowBlock, 0, cuda::stream()>>>(x, y, rows, cols, scale);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void reduce_rows(const T* x, T* y, int64_t rows, int64_t cols, double scale) {
  using A = typename Compute<T>::type;
  const A sc = static_cast<A>(scale);
  if (cols <= kWarpRowMax) return launch_rows_warp<T, T, A>(x, y, rows, cols, sc);
  const int64_t sms = CudaContext::get().sm_count();
  const int64_t cap = sms * 32;
  int64_t splits = 1;
  if (rows < 2 * sms && cols >= 32768) {
    const int64_t by_len = (cols + 8191) / 8192, by_occupancy = (4 * sms + rows - 1) / rows;
    splits = by_len < by_occupancy ? by_len : by_occupancy;
  }
  if (splits <= 1) {
    const int64_t blocks = rows < cap ? rows : cap;
    row_block_kernel<T, T, A>
        <<<static_cast<int>(blocks), kRowBlock, 0, cuda::stream()>>>(x, y, rows, cols, 1, cols, sc);
    MT_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t chunk = (cols + splits - 1) / splits;
  Tensor ws = workspace(rows * splits, std::is_same_v<A, double>);
  A* partial = static_cast<A*>(ws.data_ptr());
  const int64_t items = rows * splits, blocks = items < cap ? items : cap;
  row_block_kernel<T, A, A>
      <<<static_cast<int>(blocks), kRowBlock, 0, cuda::stream()>>>(x, partial, rows, cols, splits, chunk, A(1));
  MT_CUDA_CHECK_LAUNCH();
  launch_rows_warp<A, T, A>(partial, y, rows, splits, sc);
}

template <typename In, typename Out, typename A>
void launch_cols(const In* x, Out* y, int64_t outer, int64_t R, int64_t inner, int64_t splits, A scale) {
  const int64_t rchunk = (R + splits - 1) / splits;
  dim3 block(kColX, kColY);
  dim3 grid(static_cast<unsigned>((inner + kColX - 1) / kColX), static_cast<unsigned>(outer < 65535 ? outer : 65535),
            static_cast<unsigned>(splits));
  col_kernel<In, Out, A><<<grid, block, 0, cuda::stream()>>>(x, y, outer, R, inner, rchunk, scale);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void reduce_cols(const T* x, T* y, int64_t outer, int64_t R, int64_t inner, double scale) {
  using A = typename Compute<T>::type;
  const A sc = static_cast<A>(scale);
  MT_CHECK_SHAPE((inner + kColX - 1) / kColX < (int64_t{1} << 31), "reduce_sum_fwd_cuda: inner size ", inner,
                 " too large");
  const int64_t sms = CudaContext::get().sm_count();
  const int64_t col_blocks = ((inner + kColX - 1) / kColX) * (outer < 65535 ? outer : 65535);
  int64_t splits = 1;
  if (col_blocks < sms && R >= 1024) {
    const int64_t by_len = (R + 255) / 256, by_occupancy = (2 * sms + col_blocks - 1) / col_blocks;
    splits = by_len < by_occupancy ? by_len : by_occupancy;
    splits = splits < 65535 ? splits : 65535;
  }
  if (splits <= 1) return launch_cols<T, T, A>(x, y, outer, R, inner, 1, sc);
  Tensor ws = workspace(splits * outer * inner, std::is_same_v<A, double>);
  A* partial = static_cast<A*>(ws.data_ptr());  // [splits, outer, inner]
  launch_cols<T, A, A>(x, partial, outer, R, inner, splits, A(1));
  launch_cols<A, T, A>(partial, y, 1, splits, outer * inner, 1, sc);
}

}  // namespace

void reduce_sum_fwd_cuda(const ReduceParams& p) {
  const int64_t n_out = p.outer * p.inner;
  if (n_out == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    if (p.reduce == 0) {
      // Empty reduction: 0 for sum, 0 * inf = NaN for mean (like PyTorch); scale says which.
      using A = typename Compute<T>::type;
      launch_rows_warp<T, T, A>(x, y, n_out, 0, static_cast<A>(p.scale));
      return;
    }
    if (p.inner == 1) {
      reduce_rows<T>(x, y, p.outer, p.reduce, p.scale);
    } else {
      reduce_cols<T>(x, y, p.outer, p.reduce, p.inner, p.scale);
    }
  });
}

}  // namespace mt::kernels
