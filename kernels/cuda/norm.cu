// CUDA RMSNorm / LayerNorm with the fused residual add (math in kernels/norm.h).
//
// Row kernels: one warp per row (8 rows per 256-thread block, grid-stride over rows). A warp reads 32 consecutive
// elements per step (coalesced) and reduces with shuffles, so rows of any size (1, 7, 768, 1536, ...) need no
// shared memory and no block-level synchronisation. Passes over the row re-read it from L1/L2: mean, then the
// centred sum of squares (two-pass, as the CPU reference), then the output.
// dweight / dbias: the training step's row kernel (below) sums them per block as it computes dx; otherwise a
// column-tiled kernel (32 columns x 8 warps, one chunk of rows per block) writes partial sums. A second kernel adds
// the partial sums in a fixed order: deterministic, no atomics.
// The training step's norms (f32 statistics and residual stream, H a multiple of 128) take the row kernels below,
// which hold a row in registers and use vector loads; the general kernels serve every other case.
// Storage dtypes are runtime arguments (a uniform switch per load / store), so one instantiation per compute type
// serves every combination of x / y / weight dtypes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>
#include <type_traits>

#include "core/cuda/dtype_cuda.cuh"
#include "core/tensor.h"
#include "kernels/norm.h"

namespace mt::kernels {

namespace {

constexpr int kWarps = 8;        // rows per block in the row kernels
constexpr int kColTile = 32;     // columns per block in the dweight kernel
constexpr int kMaxChunks = 512;  // row chunks in the dweight kernel (bounds the workspace)
constexpr int64_t kMinChunkRows = 64;
constexpr int64_t kDwBlocks = 512;        // blocks of the row kernel that also sums dweight / dbias
constexpr size_t kDwMaxSmem = 96 * 1024;  // its shared memory: two blocks per multiprocessor at most

template <typename C>
__device__ __forceinline__ C load_any(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: return static_cast<C>(static_cast<const float*>(p)[i]);
    case DType::F64: return static_cast<C>(static_cast<const double*>(p)[i]);
    case DType::BF16: return static_cast<C>(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    default: return static_cast<C>(__half2float(static_cast<const __half*>(p)[i]));
  }
}

template <typename C>
__device__ __forceinline__ void store_any(void* p, DType dt, int64_t i, C v) {
  switch (dt) {
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case DType::F64: static_cast<double*>(p)[i] = static_cast<double>(v); return;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); return;
    default: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); return;
  }
}

template <typename C>
__device__ __forceinline__ C warp_sum(C v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename C>
__global__ void norm_fwd_kernel(NormFwdParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t H = p.H;
  const C* res = static_cast<const C*>(p.residual);
  C* rout = static_cast<C*>(p.residual_out);
  const C eps = static_cast<C>(p.eps);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < p.rows;
       i += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = i * H;
    auto r_at = [&](int64_t c) { return load_any<C>(p.x, p.x_dtype, off + c) + (res ? res[off + c] : C(0)); };
    C mu = C(0);
    if (!p.rms) {
      C s = C(0);
      for (int64_t c = lane; c < H; c += 32) s += r_at(c);
      mu = warp_sum(s) / static_cast<C>(H);
    }
    C ss = C(0);
    for (int64_t c = lane; c < H; c += 32) {
      const C r = r_at(c);
      if (rout) rout[off + c] = r;
      ss += (r - mu) * (r - mu);
    }
    const C rstd = C(1) / sqrt(warp_sum(ss) / static_cast<C>(H) + eps);
    if (lane == 0) {
      if (p.mean) static_cast<C*>(p.mean)[i] = mu;
      if (p.rstd) static_cast<C*>(p.rstd)[i] = rstd;
    }
    for (int64_t c = lane; c < H; c += 32) {
      C v = (r_at(c) - mu) * rstd * load_any<C>(p.weight, p.w_dtype, c);
      if (p.bias) v += load_any<C>(p.bias, p.w_dtype, c);
      store_any<C>(p.y, p.y_dtype, off + c, v);
    }
  }
}

// dx / d_residual, one warp per row.
template <typename C>
__global__ void norm_bwd_dx_kernel(NormBwdParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t H = p.H;
  const C* dres_out = static_cast<const C*>(p.d_residual_out);
  C* dres = static_cast<C*>(p.d_residual);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < p.rows;
       i += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = i * H;
    const C mu = p.rms ? C(0) : static_cast<const C*>(p.mean)[i];
    const C rs = static_cast<const C*>(p.rstd)[i];
    C sum_g = C(0), sum_gn = C(0);
    for (int64_t c = lane; c < H; c += 32) {
      const C gn = load_any<C>(p.dy, p.dy_dtype, off + c) * load_any<C>(p.weight, p.w_dtype, c);
      sum_g += gn;
      sum_gn += gn * (load_any<C>(p.r, p.r_dtype, off + c) - mu) * rs;
    }
    const C mean_g = p.rms ? C(0) : warp_sum(sum_g) / static_cast<C>(H);
    const C mean_gn = warp_sum(sum_gn) / static_cast<C>(H);
    for (int64_t c = lane; c < H; c += 32) {
      const C n = (load_any<C>(p.r, p.r_dtype, off + c) - mu) * rs;
      const C gn = load_any<C>(p.dy, p.dy_dtype, off + c) * load_any<C>(p.weight, p.w_dtype, c);
      C d = rs * (gn - mean_g - n * mean_gn);
      if (dres_out) d += dres_out[off + c];
      if (p.dx) store_any<C>(p.dx, p.dx_dtype, off + c, d);
      if (dres) dres[off + c] = d;
    }
  }
}

// partial[chunk][0][c] = sum over the chunk's rows of dy * n, partial[chunk][1][c] = sum of dy.
// grid: x = column tiles, y = row chunks; block (kColTile, kWarps).
template <typename C>
__global__ void norm_bwd_dw_kernel(NormBwdParams p, C* __restrict__ partial, int64_t rows_per_chunk) {
  __shared__ C red_w[kWarps][kColTile];
  __shared__ C red_b[kWarps][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t H = p.H;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTile + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < p.rows ? r0 + rows_per_chunk : p.rows;
  C aw = C(0), ab = C(0);
  if (c < H) {
    for (int64_t i = r0 + ty; i < r1; i += kWarps) {
      const C mu = p.rms ? C(0) : static_cast<const C*>(p.mean)[i];
      const C rs = static_cast<const C*>(p.rstd)[i];
      const C g = load_any<C>(p.dy, p.dy_dtype, i * H + c);
      aw += g * (load_any<C>(p.r, p.r_dtype, i * H + c) - mu) * rs;
      ab += g;
    }
  }
  red_w[ty][tx] = aw;
  red_b[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && c < H) {
    C tw = C(0), tb = C(0);
    for (int k = 0; k < kWarps; ++k) {
      tw += red_w[k][tx];
      tb += red_b[k][tx];
    }
    partial[(static_cast<int64_t>(blockIdx.y) * 2 + 0) * H + c] = tw;
    partial[(static_cast<int64_t>(blockIdx.y) * 2 + 1) * H + c] = tb;
  }
}

// dw[c] = sum over chunks k of partial[k][0][c], db likewise from partial[k][1]. grid: 2H / 32 column tiles of 32;
// block (32, kWarps): warp ty sums chunks ty, ty + kWarps, ... and the warps' sums are added in warp order, so the
// order is fixed by nchunks alone (deterministic) and each thread's loads are independent.
template <typename C>
__global__ void norm_dw_reduce_kernel(const C* __restrict__ partial, int64_t nchunks, int64_t H, void* dw, void* db,
                                      DType w_dtype) {
  __shared__ C red[kWarps][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColTile + tx;
  const int64_t which = j / H, c = j % H;
  C acc = C(0);
  if (j < 2 * H) {
#pragma unroll 8
    for (int64_t k = ty; k < nchunks; k += kWarps) acc += partial[(k * 2 + which) * H + c];
  }
  red[ty][tx] = acc;
  __syncthreads();
  if (ty != 0 || j >= 2 * H) return;
  C sum = red[0][tx];
  for (int w = 1; w < kWarps; ++w) sum += red[w][tx];
  void* out = which == 0 ? dw : db;
  if (out) store_any<C>(out, w_dtype, c, sum);
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernels for the training step's case: f32 statistics, x / y / dy / dx of one 16- or 32-bit type T, the residual
// stream, weight and bias in f32, H a multiple of 128 up to 128 NV. A warp holds its row in registers, NV chunks of
// 4 adjacent elements per lane (chunk j at columns 4 (32 j + lane)), so each input is read once with one 8- or
// 16-byte load per chunk and each output written once. The row sums run per lane over its chunks, then across the
// warp: another order than the general kernels', the same math.
constexpr int kRowVec = 4;

template <typename T>
struct alignas(sizeof(T) * kRowVec) RowPack {
  T v[kRowVec];
};
struct alignas(16) RowF4 {
  float v[kRowVec];
};

template <typename T>
__device__ __forceinline__ void load_row4(const void* p, int64_t i, float (&out)[kRowVec]) {
  const RowPack<T> q = *reinterpret_cast<const RowPack<T>*>(static_cast<const T*>(p) + i);
#pragma unroll
  for (int e = 0; e < kRowVec; ++e) out[e] = cuda::load(q.v, e);
}
template <typename T>
__device__ __forceinline__ void store_row4(void* p, int64_t i, const float (&in)[kRowVec]) {
  RowPack<T> q;
#pragma unroll
  for (int e = 0; e < kRowVec; ++e) q.v[e] = cuda::from_compute<T>(in[e]);
  *reinterpret_cast<RowPack<T>*>(static_cast<T*>(p) + i) = q;
}

template <typename T, int NV>
__global__ void __launch_bounds__(kWarps * 32) norm_fwd_row_kernel(NormFwdParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t H = p.H;
  const int nv = static_cast<int>(H / (32 * kRowVec));
  const float eps = static_cast<float>(p.eps), inv_h = 1.0f / static_cast<float>(H);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < p.rows;
       i += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = i * H;
    float r[NV][kRowVec];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (j >= nv) break;
      const int64_t c = off + (j * 32 + lane) * kRowVec;
      load_row4<T>(p.x, c, r[j]);
      if (p.residual) {
        const RowF4 q = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.residual) + c);
#pragma unroll
        for (int e = 0; e < kRowVec; ++e) r[j][e] += q.v[e];
      }
      if (p.residual_out)
        *reinterpret_cast<RowF4*>(static_cast<float*>(p.residual_out) + c) =
            RowF4{{r[j][0], r[j][1], r[j][2], r[j][3]}};
#pragma unroll
      for (int e = 0; e < kRowVec; ++e) s += r[j][e];
    }
    const float mu = p.rms ? 0.0f : warp_sum(s) * inv_h;
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (j >= nv) break;
#pragma unroll
      for (int e = 0; e < kRowVec; ++e) ss += (r[j][e] - mu) * (r[j][e] - mu);
    }
    const float rstd = 1.0f / sqrtf(warp_sum(ss) * inv_h + eps);
    if (lane == 0) {
      if (p.mean) static_cast<float*>(p.mean)[i] = mu;
      if (p.rstd) static_cast<float*>(p.rstd)[i] = rstd;
    }
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (j >= nv) break;
      const int64_t col = (j * 32 + lane) * kRowVec;
      const RowF4 w = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.weight) + col);
      float y[kRowVec];
#pragma unroll
      for (int e = 0; e < kRowVec; ++e) y[e] = (r[j][e] - mu) * rstd * w.v[e];
      if (p.bias) {
        const RowF4 b = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.bias) + col);
#pragma unroll
        for (int e = 0; e < kRowVec; ++e) y[e] += b.v[e];
      }
      store_row4<T>(p.y, off + col, y);
    }
  }
}

// kDW: also dweight / dbias. Each warp sums dy * n and dy over its rows into its own slice of dynamic shared memory
// (acc[warp][0 / 1][H]: registers would cost the kernel half its occupancy); at the end the block adds its warps'
// sums in warp order into partial[blockIdx.x][0 / 1][:], which norm_dw_reduce_kernel adds over blocks. The grid is
// fixed by the row count alone (kDwBlocks at most), so the summation order does not depend on the GPU.
template <typename T, int NV, bool kDW>
__global__ void __launch_bounds__(kWarps * 32) norm_bwd_dx_row_kernel(NormBwdParams p, float* __restrict__ partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t H = p.H;
  const int nv = static_cast<int>(H / (32 * kRowVec));
  const float inv_h = 1.0f / static_cast<float>(H);
  extern __shared__ float4 dw_smem[];
  float* acc = reinterpret_cast<float*>(dw_smem);
  if constexpr (kDW) {
    for (int64_t k = threadIdx.x; k < kWarps * 2 * H; k += kWarps * 32) acc[k] = 0.0f;
    __syncthreads();
  }
  float* acc_w = acc + warp * 2 * H;
  float* acc_b = acc_w + H;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < p.rows;
       i += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = i * H;
    const float mu = p.rms ? 0.0f : static_cast<const float*>(p.mean)[i];
    const float rs = static_cast<const float*>(p.rstd)[i];
    float gn[NV][kRowVec], n[NV][kRowVec];
    float sum_g = 0.0f, sum_gn = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (j >= nv) break;
      const int64_t col = (j * 32 + lane) * kRowVec;
      float dy[kRowVec];
      load_row4<T>(p.dy, off + col, dy);
      const RowF4 w = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.weight) + col);
      const RowF4 r = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.r) + off + col);
#pragma unroll
      for (int e = 0; e < kRowVec; ++e) {
        gn[j][e] = dy[e] * w.v[e];
        n[j][e] = (r.v[e] - mu) * rs;
        sum_g += gn[j][e];
        sum_gn += gn[j][e] * (r.v[e] - mu) * rs;
      }
      if constexpr (kDW) {
        RowF4* aw = reinterpret_cast<RowF4*>(acc_w + col);
        RowF4* ab = reinterpret_cast<RowF4*>(acc_b + col);
        RowF4 qw = *aw, qb = *ab;
#pragma unroll
        for (int e = 0; e < kRowVec; ++e) {
          qw.v[e] += dy[e] * n[j][e];
          qb.v[e] += dy[e];
        }
        *aw = qw;
        *ab = qb;
      }
    }
    const float mean_g = p.rms ? 0.0f : warp_sum(sum_g) * inv_h;
    const float mean_gn = warp_sum(sum_gn) * inv_h;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (j >= nv) break;
      const int64_t c = off + (j * 32 + lane) * kRowVec;
      float d[kRowVec];
#pragma unroll
      for (int e = 0; e < kRowVec; ++e) d[e] = rs * (gn[j][e] - mean_g - n[j][e] * mean_gn);
      if (p.d_residual_out) {
        const RowF4 q = *reinterpret_cast<const RowF4*>(static_cast<const float*>(p.d_residual_out) + c);
#pragma unroll
        for (int e = 0; e < kRowVec; ++e) d[e] += q.v[e];
      }
      if (p.dx) store_row4<T>(p.dx, c, d);
      if (p.d_residual)
        *reinterpret_cast<RowF4*>(static_cast<float*>(p.d_residual) + c) = RowF4{{d[0], d[1], d[2], d[3]}};
    }
  }
  if constexpr (kDW) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < 2 * H; k += kWarps * 32) {
      float t = acc[k];
      for (int w = 1; w < kWarps; ++w) t += acc[w * 2 * H + k];
      partial[static_cast<int64_t>(blockIdx.x) * 2 * H + k] = t;
    }
  }
}

bool aligned_to(const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Call f(T tag, NV) when the row kernels serve a row of H elements of storage dtype dt with these pointers.
template <typename F>
bool row_kernels(int64_t H, DType dt, std::initializer_list<const void*> t_ptrs,
                 std::initializer_list<const void*> f32_ptrs, F&& f) {
  if (H % (32 * kRowVec) != 0 || H / (32 * kRowVec) > 24) return false;
  const size_t es = dt == DType::F32 ? 4 : 2;
  if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16) return false;
  for (const void* q : t_ptrs)
    if (!aligned_to(q, es * kRowVec)) return false;
  for (const void* q : f32_ptrs)
    if (!aligned_to(q, 16)) return false;
  const bool small = H / (32 * kRowVec) <= 8;
  auto go = [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (small)
      f(tag, std::integral_constant<int, 8>{});
    else
      f(tag, std::integral_constant<int, 24>{});
  };
  if (dt == DType::F32)
    go(cuda::TypeTag<float>{});
  else if (dt == DType::BF16)
    go(cuda::TypeTag<__nv_bfloat16>{});
  else
    go(cuda::TypeTag<__half>{});
  return true;
}

template <typename C>
void launch_fwd(const NormFwdParams& p) {
  if constexpr (std::is_same<C, float>::value) {
    const bool served =
        p.w_dtype == DType::F32 && p.x_dtype == p.y_dtype &&
        row_kernels(p.H, p.x_dtype, {p.x, p.y}, {p.residual, p.residual_out, p.weight, p.bias}, [&](auto tag, auto nv) {
          using T = typename decltype(tag)::type;
          norm_fwd_row_kernel<T, decltype(nv)::value>
              <<<cuda::grid_for(p.rows * 32), kWarps * 32, 0, cuda::stream()>>>(p);
        });
    if (served) {
      MT_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  norm_fwd_kernel<C><<<cuda::grid_for(p.rows * 32), kWarps * 32, 0, cuda::stream()>>>(p);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename C>
void launch_dw_reduce(const C* partial, int64_t nchunks, const NormBwdParams& p) {
  const int64_t tiles = (2 * p.H + kColTile - 1) / kColTile;
  MT_CHECK_SHAPE(tiles <= 2147483647LL, "norm_bwd_cuda: row size ", p.H, " too large");
  norm_dw_reduce_kernel<C><<<static_cast<unsigned>(tiles), dim3(kColTile, kWarps), 0, cuda::stream()>>>(
      partial, nchunks, p.H, p.dweight, p.dbias, p.w_dtype);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename C>
void launch_bwd(const NormBwdParams& p) {
  const bool want_dw = p.dweight || p.dbias;
  if (p.dx || p.d_residual) {
    bool served = false, dw_done = false;
    if constexpr (std::is_same<C, float>::value)
      served = p.w_dtype == DType::F32 && p.r_dtype == DType::F32 && (!p.dx || p.dx_dtype == p.dy_dtype) &&
               row_kernels(p.H, p.dy_dtype, {p.dy, p.dx}, {p.r, p.weight, p.d_residual_out, p.d_residual},
                           [&](auto tag, auto nv) {
                             using T = typename decltype(tag)::type;
                             constexpr int NV = decltype(nv)::value;
                             // dweight / dbias in the same pass, while the warps' sums fit in shared memory.
                             const size_t smem = static_cast<size_t>(kWarps) * 2 * p.H * sizeof(float);
                             if (want_dw && smem <= kDwMaxSmem) {
                               auto kernel = norm_bwd_dx_row_kernel<T, NV, true>;
                               MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                                  static_cast<int>(kDwMaxSmem)));
                               int64_t blocks = (p.rows + kWarps - 1) / kWarps;
                               blocks = blocks < kDwBlocks ? blocks : kDwBlocks;
                               Tensor partial = Tensor::empty({blocks, 2, p.H}, DType::F32,
                                                              Device::cuda(CudaContext::get().device()));
                               float* part = static_cast<float*>(partial.data_ptr());
                               kernel<<<static_cast<unsigned>(blocks), kWarps * 32, smem, cuda::stream()>>>(p, part);
                               MT_CUDA_CHECK_LAUNCH();
                               launch_dw_reduce<float>(part, blocks, p);
                               dw_done = true;
                               return;
                             }
                             norm_bwd_dx_row_kernel<T, NV, false>
                                 <<<cuda::grid_for(p.rows * 32), kWarps * 32, 0, cuda::stream()>>>(p, nullptr);
                           });
    if (!served) norm_bwd_dx_kernel<C><<<cuda::grid_for(p.rows * 32), kWarps * 32, 0, cuda::stream()>>>(p);
    MT_CUDA_CHECK_LAUNCH();
    if (dw_done) return;
  }
  if (want_dw) {
    int64_t rpc = (p.rows + kMaxChunks - 1) / kMaxChunks;
    if (rpc < kMinChunkRows) rpc = kMinChunkRows;
    const int64_t nchunks = (p.rows + rpc - 1) / rpc;
    const int64_t ctiles = (p.H + kColTile - 1) / kColTile;
    MT_CHECK_SHAPE(ctiles <= 2147483647LL, "norm_bwd_cuda: row size ", p.H, " too large");
    Tensor partial = Tensor::empty({nchunks, 2, p.H}, std::is_same<C, double>::value ? DType::F64 : DType::F32,
                                   Device::cuda(CudaContext::get().device()));
    dim3 grid(static_cast<unsigned>(ctiles), static_cast<unsigned>(nchunks));
    dim3 block(kColTile, kWarps);
    norm_bwd_dw_kernel<C><<<grid, block, 0, cuda::stream()>>>(p, static_cast<C*>(partial.data_ptr()), rpc);
    MT_CUDA_CHECK_LAUNCH();
    launch_dw_reduce<C>(static_cast<const C*>(partial.data_ptr()), nchunks, p);
  }
}

void check_floats(const char* what, std::initializer_list<DType> dts) {
  for (DType d : dts) MT_CHECK_SHAPE(is_floating(d), what, ": buffers must be float, got ", dtype_name(d));
}

}  // namespace

void norm_fwd_cuda(const NormFwdParams& p) {
  check_floats("norm_fwd_cuda", {p.x_dtype, p.w_dtype, p.y_dtype});
  MT_CHECK_SHAPE(p.rms || p.mean || !p.rstd, "norm_fwd_cuda: LayerNorm saving rstd must also save mean");
  if (p.rows == 0 || p.H == 0) return;
  if (p.x_dtype == DType::F64)
    launch_fwd<double>(p);
  else
    launch_fwd<float>(p);
}

void norm_bwd_cuda(const NormBwdParams& p) {
  check_floats("norm_bwd_cuda", {p.r_dtype, p.w_dtype, p.dy_dtype, p.dx ? p.dx_dtype : DType::F32});
  MT_CHECK_SHAPE(p.rstd && (p.rms || p.mean), "norm_bwd_cuda: needs the saved rstd (and mean for LayerNorm)");
  if (p.rows == 0 || p.H == 0) return;
  if (p.r_dtype == DType::F64)
    launch_bwd<double>(p);
  else
    launch_bwd<float>(p);
}

}  // namespace mt::kernels
