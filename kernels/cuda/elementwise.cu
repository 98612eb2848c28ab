// CUDA elementwise kernels (kernels/elementwise.h). Grid-stride loops over the output; loads and stores go through
// load<T> / from_compute<T>, so one template serves f32, f64, bf16 and f16 storage with float (double for f64)
// math. The scalar formulas are the ones the CPU reference uses (ew:: in the header).
#include "core/cuda/dtype_cuda.cuh"
#include "core/rng.h"
#include "kernels/elementwise.h"

namespace mt::kernels {

namespace {

using cuda::Compute;
using cuda::from_compute;
using cuda::load;

constexpr int kBlock = 256;

__device__ __forceinline__ int64_t grid_start() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Offsets of a and b for output index i (row-major over L.shape). Index is uint32_t when the output has fewer
// than 2^32 elements: 32-bit division is several times cheaper than 64-bit on the GPU, and this loop is the
// whole cost of a broadcast op beyond the memory traffic.
template <typename Index>
__device__ __forceinline__ void broadcast_offsets(const BroadcastLayout& L, int64_t i64, int64_t& ia, int64_t& ib) {
  Index i = static_cast<Index>(i64);
  ia = 0;
  ib = 0;
  for (int d = L.ndim - 1; d >= 0; --d) {
    const Index n = static_cast<Index>(L.shape[d]);
    const Index q = i / n;
    const int64_t idx = static_cast<int64_t>(i - q * n);
    i = q;
    ia += idx * L.a_strides[d];
    ib += idx * L.b_strides[d];
  }
}

bool fits_u32(const BroadcastLayout& L) { return L.numel < (int64_t{1} << 32); }

template <typename T>
__global__ void binary_contig_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, BinaryOp op,
                                     int64_t n) {
  using C = typename Compute<T>::type;
  for (int64_t i = grid_start(); i < n; i += grid_step())
    out[i] = from_compute<T>(ew::binary<C>(op, load(a, i), load(b, i)));
}

template <typename T, typename Index>
__global__ void binary_bcast_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, BinaryOp op,
                                    BroadcastLayout L) {
  using C = typename Compute<T>::type;
  for (int64_t i = grid_start(); i < L.numel; i += grid_step()) {
    int64_t ia, ib;
    broadcast_offsets<Index>(L, i, ia, ib);
    out[i] = from_compute<T>(ew::binary<C>(op, load(a, ia), load(b, ib)));
  }
}

template <typename T, typename Index>
__global__ void binary_bwd_kernel(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                                  T* __restrict__ ga, T* __restrict__ gb, bool mul, BroadcastLayout L) {
  using C = typename Compute<T>::type;
  for (int64_t i = grid_start(); i < L.numel; i += grid_step()) {
    int64_t ia = i, ib = i;
    if (!L.contiguous) broadcast_offsets<Index>(L, i, ia, ib);
    const C gi = load(g, i), av = a ? load(a, ia) : C(0), bv = b ? load(b, ib) : C(0);  // null: not needed
    if (mul) {
      if (ga) ga[i] = from_compute<T>(gi * bv);
      if (gb) gb[i] = from_compute<T>(gi * av);
    } else {
      if (ga) ga[i] = from_compute<T>(gi / bv);
      if (gb) gb[i] = from_compute<T>(-gi * av / (bv * bv));
    }
  }
}

template <typename T>
__global__ void unary_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, UnaryOp op, int64_t n, double alpha,
                                 double beta) {
  using C = typename Compute<T>::type;
  const C al = static_cast<C>(alpha), be = static_cast<C>(beta);
  for (int64_t i = grid_start(); i < n; i += grid_step())
    y[i] = from_compute<T>(ew::unary_fwd<C>(op, load(x, i), al, be));
}

template <typename T>
__global__ void unary_bwd_kernel(const T* __restrict__ g, const T* __restrict__ s, T* __restrict__ gx, UnaryOp op,
                                 int64_t n, double alpha) {
  using C = typename Compute<T>::type;
  const C al = static_cast<C>(alpha);
  for (int64_t i = grid_start(); i < n; i += grid_step())
    gx[i] = from_compute<T>(ew::unary_bwd<C>(op, load(g, i), s ? load(s, i) : C(0), al));
}

template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, double p, uint64_t seed,
                               uint64_t offset) {
  using C = typename Compute<T>::type;
  const C scale = static_cast<C>(1.0 / (1.0 - p));  // same expression as the CPU reference
  for (int64_t i = grid_start(); i < n; i += grid_step()) {
    const bool keep = static_cast<double>(Philox::uniform(seed, offset, static_cast<uint64_t>(i))) >= p;
    y[i] = from_compute<T>(keep ? load(x, i) * scale : C(0));
  }
}

}  // namespace

void binary_fwd_cuda(const BinaryParams& p) {
  const BroadcastLayout& L = p.layout;
  if (L.numel == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    T* out = static_cast<T*>(p.out);
    const int grid = cuda::grid_for(L.numel, kBlock);
    if (L.contiguous || L.ndim == 0) {
      binary_contig_kernel<T><<<grid, kBlock, 0, cuda::stream()>>>(a, b, out, p.op, L.numel);
    } else if (fits_u32(L)) {
      binary_bcast_kernel<T, uint32_t><<<grid, kBlock, 0, cuda::stream()>>>(a, b, out, p.op, L);
    } else {
      binary_bcast_kernel<T, uint64_t><<<grid, kBlock, 0, cuda::stream()>>>(a, b, out, p.op, L);
    }
    MT_CUDA_CHECK_LAUNCH();
  });
}

void binary_bwd_cuda(const BinaryBwdParams& p) {
  BroadcastLayout L = p.layout;
  if (L.numel == 0) return;
  if (L.ndim == 0) L.contiguous = true;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto kernel = fits_u32(L) ? binary_bwd_kernel<T, uint32_t> : binary_bwd_kernel<T, uint64_t>;
    kernel<<<cuda::grid_for(L.numel, kBlock), kBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(p.g), static_cast<const T*>(p.a), static_cast<const T*>(p.b), static_cast<T*>(p.ga),
        static_cast<T*>(p.gb), p.op == BinaryOp::Mul, L);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void unary_fwd_cuda(const UnaryParams& p) {
  if (p.numel == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    unary_fwd_kernel<T><<<cuda::grid_for(p.numel, kBlock), kBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(p.x), static_cast<T*>(p.y), p.op, p.numel, p.alpha, p.beta);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void unary_bwd_cuda(const UnaryBwdParams& p) {
  if (p.numel == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    unary_bwd_kernel<T><<<cuda::grid_for(p.numel, kBlock), kBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(p.g), static_cast<const T*>(p.saved), static_cast<T*>(p.gx), p.op, p.numel, p.alpha);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void dropout_apply_cuda(const DropoutParams& p) {
  if (p.numel == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_kernel<T><<<cuda::grid_for(p.numel, kBlock), kBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(p.x), static_cast<T*>(p.y), p.numel, p.p, p.seed, p.offset);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mt::kernels
