// CUDA log-softmax and fused cross-entropy (formulas in kernels/cross_entropy.h).
//
// One block per row (blocks stride over rows). Pass 1 keeps a running (max, sum of exp(x - max)) per thread and
// merges them across the block (warp shuffles, then shared memory): the row is read once for its log-sum-exp.
// Pass 2 writes the output row. Math in f32 (f64 for f64) for every storage dtype. The cross-entropy mean is a
// second, single-block kernel that sums the per-row losses in a fixed order (bitwise reproducible).
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cross_entropy.h"
#include "kernels/cuda/row_reduce.cuh"

namespace mt::kernels {

namespace {

using namespace rowred;

template <typename T, int V>
__global__ void ls_fwd_kernel(const T* x, T* y, int64_t R, int64_t C) {
  using A = typename cuda::Compute<T>::type;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + r * C;
    const A lse = row_lse<T, V>(xr, C);
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
      A e[V];
      load_vec<T, V>(xr, c, e);
#pragma unroll
      for (int i = 0; i < V; ++i) e[i] -= lse;
      store_vec<T, V>(y + r * C, c, e);
    }
  }
}

template <typename T, int V>
__global__ void ls_bwd_kernel(const T* y, const T* dy, T* dx, int64_t R, int64_t C) {
  using A = typename cuda::Compute<T>::type;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T* yr = y + r * C;
    const T* gr = dy + r * C;
    A s = A(0);
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
      A g[V];
      load_vec<T, V>(gr, c, g);
#pragma unroll
      for (int i = 0; i < V; ++i) s += g[i];
    }
    s = block_sum(s);
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
      A g[V], e[V];
      load_vec<T, V>(gr, c, g);
      load_vec<T, V>(yr, c, e);
#pragma unroll
      for (int i = 0; i < V; ++i) e[i] = g[i] - exp(e[i]) * s;
      store_vec<T, V>(dx + r * C, c, e);
    }
  }
}

template <typename I>
__device__ __forceinline__ bool valid_target(const I* t, int64_t i, int64_t C, int64_t ignore, int64_t* tv) {
  const int64_t v = static_cast<int64_t>(t[i]);
  *tv = v;
  return v != ignore && v >= 0 && v < C;
}

template <typename T, typename I, int V>
__global__ void xent_fwd_kernel(const T* x, const I* targets, int64_t N, int64_t C, int64_t ignore,
                                typename cuda::Compute<T>::type* lse_out, typename cuda::Compute<T>::type* row_loss,
                                long long* bad_row) {
  using A = typename cuda::Compute<T>::type;
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* xi = x + i * C;
    const A lse = row_lse<T, V>(xi, C);
    if (threadIdx.x == 0) {
      int64_t t;
      const bool ok = valid_target(targets, i, C, ignore, &t);
      if (!ok && t != ignore) atomicMin(bad_row, static_cast<long long>(i));
      lse_out[i] = lse;
      row_loss[i] = ok ? lse - cuda::load(xi, t) : A(0);
    }
  }
}

// Single block: loss = sum(row_loss) / count in a fixed order; count = number of valid targets.
template <typename A, typename I>
__global__ void xent_mean_kernel(const A* row_loss, const I* targets, int64_t N, int64_t C, int64_t ignore, A* loss,
                                 A* count) {
  A s = A(0), n = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    int64_t t;
    if (valid_target(targets, i, C, ignore, &t)) {
      s += row_loss[i];
      n += A(1);
    }
  }
  s = block_sum(s);
  n = block_sum(n);
  if (threadIdx.x == 0) {
    *loss = n > A(0) ? s / n : A(0);
    *count = n;
  }
}

template <typename T, typename I, int V>
__global__ void xent_bwd_kernel(const T* x, const I* targets, int64_t N, int64_t C, int64_t ignore,
                                const typename cuda::Compute<T>::type* lse,
                                const typename cuda::Compute<T>::type* count,
                                const typename cuda::Compute<T>::type* grad_loss, T* dx) {
  using A = typename cuda::Compute<T>::type;
  const A cnt = *count;
  const A scale = cnt > A(0) ? *grad_loss / cnt : A(0);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* xi = x + i * C;
    T* di = dx + i * C;
    int64_t t;
    if (!valid_target(targets, i, C, ignore, &t)) {
      A z[V];
#pragma unroll
      for (int k = 0; k < V; ++k) z[k] = A(0);
      for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V)
        store_vec<T, V>(di, c, z);
      continue;
    }
    const A l = lse[i];
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
      A e[V];
      load_vec<T, V>(xi, c, e);
#pragma unroll
      for (int k = 0; k < V; ++k) e[k] = (exp(e[k] - l) - (c + k == t ? A(1) : A(0))) * scale;
      store_vec<T, V>(di, c, e);
    }
  }
}

}  // namespace

void log_softmax_fwd_cuda(const LogSoftmaxParams& p) {
  if (p.R == 0 || p.C == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int VW = 16 / static_cast<int>(sizeof(T));
    auto kernel = vec_width<T>(p.C, {p.x, p.y}) == VW ? ls_fwd_kernel<T, VW> : ls_fwd_kernel<T, 1>;
    kernel<<<rows_grid(p.R), threads_for(p.C), 0, cuda::stream()>>>(static_cast<const T*>(p.x), static_cast<T*>(p.y),
                                                                    p.R, p.C);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void log_softmax_bwd_cuda(const LogSoftmaxParams& p) {
  if (p.R == 0 || p.C == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int VW = 16 / static_cast<int>(sizeof(T));
    auto kernel = vec_width<T>(p.C, {p.y, p.dy, p.dx}) == VW ? ls_bwd_kernel<T, VW> : ls_bwd_kernel<T, 1>;
    kernel<<<rows_grid(p.R), threads_for(p.C), 0, cuda::stream()>>>(
        static_cast<const T*>(p.y), static_cast<const T*>(p.dy), static_cast<T*>(p.dx), p.R, p.C);
    MT_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_fwd_cuda(const CrossEntropyParams& p) {
  MT_ASSERT(p.bad_row != nullptr && (p.N == 0 || p.row_loss != nullptr), "cross_entropy_fwd_cuda scratch");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename cuda::Compute<T>::type;
    dispatch_targets(p.target_dtype, [&](auto itag) {
      using I = typename decltype(itag)::type;
      if (p.N > 0) {
        constexpr int VW = 16 / static_cast<int>(sizeof(T));
        auto kernel = vec_width<T>(p.C, {p.logits}) == VW ? xent_fwd_kernel<T, I, VW> : xent_fwd_kernel<T, I, 1>;
        kernel<<<rows_grid(p.N), threads_for(p.C), 0, cuda::stream()>>>(
            static_cast<const T*>(p.logits), static_cast<const I*>(p.targets), p.N, p.C, p.ignore_index,
            static_cast<A*>(p.lse), static_cast<A*>(p.row_loss), reinterpret_cast<long long*>(p.bad_row));
        MT_CUDA_CHECK_LAUNCH();
      }
      xent_mean_kernel<A, I><<<1, 1024, 0, cuda::stream()>>>(static_cast<const A*>(p.row_loss),
                                                             static_cast<const I*>(p.targets), p.N, p.C, p.ignore_index,
                                                             static_cast<A*>(p.loss), static_cast<A*>(p.count));
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_bwd_cuda(const CrossEntropyParams& p) {
  if (p.N == 0 || p.C == 0) return;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename cuda::Compute<T>::type;
    dispatch_targets(p.target_dtype, [&](auto itag) {
      using I = typename decltype(itag)::type;
      constexpr int VW = 16 / static_cast<int>(sizeof(T));
      auto kernel =
          vec_width<T>(p.C, {p.logits, p.grad_logits}) == VW ? xent_bwd_kernel<T, I, VW> : xent_bwd_kernel<T, I, 1>;
      kernel<<<rows_grid(p.N), threads_for(p.C), 0, cuda::stream()>>>(
          static_cast<const T*>(p.logits), static_cast<const I*>(p.targets), p.N, p.C, p.ignore_index,
          static_cast<const A*>(p.lse), static_cast<const A*>(p.count), static_cast<const A*>(p.grad_loss),
          static_cast<T*>(p.grad_logits));
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mt::kernels
