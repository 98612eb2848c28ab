// CUDA cross-entropy fused with the LM head (kernels/linear_cross_entropy.h).
//
// Per chunk of rows: cuBLASLt writes the chunk's logits into the scratch buffer; one block per row reads the row once
// for its log-sum-exp (online max / sum), takes the target's logit and, with the gradient, overwrites the row with
// P = (softmax - onehot) / count on a second pass (the ~100 KB row is still in L2); then cuBLASLt computes
// dh = P @ W for the chunk and adds P^T @ h into dW, both with f32 outputs (16-bit operands, f32 C). The mean is one
// single-block kernel over the per-row losses in a fixed order, so the loss is bitwise reproducible.
#include <algorithm>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/row_reduce.cuh"
#include "kernels/gemm.h"
#include "kernels/linear_cross_entropy.h"

namespace mt::kernels {

namespace {

using namespace rowred;

template <typename T, typename I, int V>
__global__ void lxent_rows_kernel(T* x, const I* targets, int64_t n, int64_t C, int64_t ignore,
                                  typename cuda::Compute<T>::type inv_count, bool grad,
                                  typename cuda::Compute<T>::type* row_loss) {
  using A = typename cuda::Compute<T>::type;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    T* xi = x + i * C;
    const A lse = row_lse<T, V>(xi, C);  // ends with a block barrier
    const int64_t t = static_cast<int64_t>(targets[i]);
    const bool valid = t != ignore;
    if (threadIdx.x == 0) row_loss[i] = valid ? lse - cuda::load(xi, t) : A(0);
    if (!grad) continue;
    __syncthreads();  // x[t] is read before any thread overwrites the row
    const A scale = valid ? inv_count : A(0);
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < C; c += static_cast<int64_t>(blockDim.x) * V) {
      A e[V];
      load_vec<T, V>(xi, c, e);
#pragma unroll
      for (int k = 0; k < V; ++k) e[k] = (exp(e[k] - lse) - (c + k == t ? A(1) : A(0))) * scale;
      store_vec<T, V>(xi, c, e);
    }
  }
}

// Single block: loss = inv_count * sum_i row_loss[i], in a fixed order.
template <typename A>
__global__ void lxent_mean_kernel(const A* row_loss, int64_t N, A inv_count, A* loss) {
  A s = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *loss = s * inv_count;
}

}  // namespace

void linear_cross_entropy_cuda(const LinearCrossEntropyParams& p) {
  MT_ASSERT(p.N >= 1 && p.H >= 1 && p.V >= 1 && p.chunk >= 1 && p.chunk <= p.N && p.count >= 0,
            "linear_cross_entropy sizes N=", p.N, " H=", p.H, " V=", p.V, " chunk=", p.chunk, " count=", p.count);
  MT_ASSERT((p.dh == nullptr) == (p.dweight == nullptr), "linear_cross_entropy: dh and dweight go together");
  const bool grad = p.dh != nullptr;
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename cuda::Compute<T>::type;
    T* x = static_cast<T*>(p.scratch);
    A* row_loss = static_cast<A*>(p.row_loss);
    const A inv_count = p.count > 0 ? A(1) / static_cast<A>(p.count) : A(0);
    dispatch_targets(p.target_dtype, [&](auto itag) {
      using I = typename decltype(itag)::type;
      const I* targets = static_cast<const I*>(p.targets);
      for (int64_t r0 = 0; r0 < p.N; r0 += p.chunk) {
        const int64_t n = std::min(p.chunk, p.N - r0);
        const LinearCrossEntropyGemms gm = linear_cross_entropy_gemms(p, r0, n);
        gemm_cuda(gm.logits);

        constexpr int VW = 16 / static_cast<int>(sizeof(T));
        // Row starts are 16-byte aligned iff the scratch is and V * sizeof(T) is a multiple of 16.
        auto kernel = vec_width<T>(p.V, {x}) == VW ? lxent_rows_kernel<T, I, VW> : lxent_rows_kernel<T, I, 1>;
        kernel<<<rows_grid(n), threads_for(p.V), 0, cuda::stream()>>>(x, targets + r0, n, p.V, p.ignore_index,
                                                                      inv_count, grad, row_loss + r0);
        MT_CUDA_CHECK_LAUNCH();
        if (!grad) continue;

        gemm_cuda(gm.dh);
        gemm_cuda(gm.dweight);
      }
    });
    lxent_mean_kernel<A><<<1, 1024, 0, cuda::stream()>>>(row_loss, p.N, inv_count, static_cast<A*>(p.loss));
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mt::kernels
