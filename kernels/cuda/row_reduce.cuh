// Block-per-row building blocks shared by the softmax / cross-entropy kernels (cross_entropy.cu,
// linear_cross_entropy.cu): an online (max, sum of exp) merge, block-wide reductions, 16-byte vector row access and the
// launch shape. Every function that reduces over the block must be reached by all of its threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "core/cuda/dtype_cuda.cuh"

namespace mt::kernels::rowred {

template <typename A>
struct MaxSum {
  A m;  // running max (-inf when empty)
  A s;  // sum of exp(x - m)
};

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

template <typename A>
__device__ __forceinline__ MaxSum<A> merge(MaxSum<A> a, MaxSum<A> b) {
  const A m = a.m > b.m ? a.m : b.m;
  if (m == neg_inf<A>()) return {m, A(0)};
  const A sa = a.m == neg_inf<A>() ? A(0) : a.s * exp(a.m - m);
  const A sb = b.m == neg_inf<A>() ? A(0) : b.s * exp(b.m - m);
  return {m, sa + sb};
}

// Block-wide merge of (max, sum) pairs; every thread gets the result. blockDim.x is a multiple of 32 (<= 1024).
template <typename A>
__device__ MaxSum<A> block_merge(MaxSum<A> v) {
  __shared__ A sm[32], ss[32];
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum<A> o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off)};
    v = merge(v, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  if (lane == 0) {
    sm[warp] = v.m;
    ss[warp] = v.s;
  }
  __syncthreads();
  if (warp == 0) {
    MaxSum<A> w = lane < nwarps ? MaxSum<A>{sm[lane], ss[lane]} : MaxSum<A>{neg_inf<A>(), A(0)};
    for (int off = 16; off > 0; off >>= 1) {
      MaxSum<A> o{__shfl_xor_sync(0xffffffffu, w.m, off), __shfl_xor_sync(0xffffffffu, w.s, off)};
      w = merge(w, o);
    }
    if (lane == 0) {
      sm[0] = w.m;
      ss[0] = w.s;
    }
  }
  __syncthreads();
  MaxSum<A> r{sm[0], ss[0]};
  __syncthreads();  // the shared slots are reused by the next call
  return r;
}

template <typename A>
__device__ A block_sum(A v) {
  __shared__ A sh[32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    A w = lane < nwarps ? sh[lane] : A(0);
    for (int off = 16; off > 0; off >>= 1) w += __shfl_xor_sync(0xffffffffu, w, off);
    if (lane == 0) sh[0] = w;
  }
  __syncthreads();
  A r = sh[0];
  __syncthreads();
  return r;
}

// V consecutive elements as one 16-byte load / store (V = 1: plain scalar access). The host picks V > 1 only when
// C % V == 0 and every row pointer is 16-byte aligned; the wide loads are what lets a block stream a row near the
// memory bandwidth (2-byte scalar loads leave most of it unused).
template <typename T, int V>
struct alignas(16) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, int64_t c, typename cuda::Compute<T>::type (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = cuda::load(p, c);
  } else {
    const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p + c);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = cuda::load(pk.v, i);
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, int64_t c, const typename cuda::Compute<T>::type (&in)[V]) {
  if constexpr (V == 1) {
    p[c] = cuda::from_compute<T>(in[0]);
  } else {
    Pack<T, V> pk;
#pragma unroll
    for (int i = 0; i < V; ++i) pk.v[i] = cuda::from_compute<T>(in[i]);
    *reinterpret_cast<Pack<T, V>*>(p + c) = pk;
  }
}

// log-sum-exp of row x[0..C) by the whole block.
template <typename T, int V>
__device__ typename cuda::Compute<T>::type row_lse(const T* x, int64_t C) {
  using A = typename cuda::Compute<T>::type;
  MaxSum<A> v{neg_inf<A>(), A(0)};
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
    A e[V];
    load_vec<T, V>(x, c, e);
    // Rescale the running sum at most once per V elements: new max first, then V exponentials.
    A m = v.m;
#pragma unroll
    for (int i = 0; i < V; ++i) m = e[i] > m ? e[i] : m;
    if (m != neg_inf<A>()) {
      if (m > v.m) v.s = v.m == neg_inf<A>() ? A(0) : v.s * exp(v.m - m);
      v.m = m;
#pragma unroll
      for (int i = 0; i < V; ++i) v.s += exp(e[i] - m);
    }
  }
  v = block_merge(v);
  return v.m == neg_inf<A>() ? v.m : v.m + log(v.s);
}

// 16 / sizeof(T) when C is a multiple of it and every pointer (hence, with C, every row) is 16-byte aligned.
template <typename T>
int vec_width(int64_t C, std::initializer_list<const void*> ptrs) {
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  if (C % V != 0) return 1;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return V;
}

inline int threads_for(int64_t C) { return C >= 4096 ? 512 : C >= 512 ? 256 : 128; }

inline int rows_grid(int64_t R) {
  const int64_t cap = static_cast<int64_t>(CudaContext::get().sm_count()) * 16;
  return static_cast<int>(std::max<int64_t>(1, std::min(R, cap)));
}

template <typename F>
void dispatch_targets(DType t, F&& f) {
  if (t == DType::I32) return f(cuda::TypeTag<int32_t>{});
  if (t == DType::I64) return f(cuda::TypeTag<int64_t>{});
  throw Error(ErrorKind::Internal, str("cross_entropy targets must be i32 / i64, got ", dtype_name(t)));
}

}  // namespace mt::kernels::rowred
