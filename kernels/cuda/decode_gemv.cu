// CUDA fused decode projections (math in kernels/decode_gemv.h).
//
// decode_gemv: blocks of 8 warps own 16 consecutive output rows (2 per warp; 8 rows, 1 per warp, for short Store
// outputs). At batch 1 a step's kernels are far from the memory bound (docs/PERFORMANCE.md): what costs is latency,
// so everything that does not depend on the previous kernel is fetched before waiting for it:
//   1. before the wait (PDL, see decode_launch.cuh), one thread starts a bulk copy (sm_90's copy engine, completing
//      on an mbarrier; other architectures copy after the wait) of the block's weight rows, which are contiguous in W,
//      into shared memory; the other threads stage the norm's weights, the conv taps and this channel's conv state,
//      and x_proj's columns of this block's channels. Holding the weights in shared memory rather than registers
//      keeps a thread at 64 registers for BT <= 4, so 4 blocks share an SM (2 before), and the LM head's many blocks
//      keep more bytes in flight;
//   2. the input stage (copy, or residual add + norm, computed redundantly by every block: a few KB) writes the
//      B input rows into shared memory in the storage dtype;
//   3. once the copy has landed, lane l of a warp multiplies the row's 16-byte vectors l, l + 32, ... with the B
//      input vectors (f32 accumulation);
//   4. warp sums; lane r * BT + b owns output (row r, batch row b) and runs the epilogue (store, or the conv step
//      and SiLU for in_proj's x half); then the block sums x_proj's partial products over its 16 channels.
// decode_norm: one block per row, the same input stage writing to global memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/decode_gemv.h"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

using decode_cuda::round_to;
using decode_cuda::warp_sum;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
static_assert(kWarps * 2 == kDecodeGemvRows, "a MixerIn block (2 rows per warp) owns kDecodeGemvRows channels");
constexpr int kNormUnroll = 4;

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// The 16 bytes of v as kVec<T> floats.
__device__ __forceinline__ void unpack(const uint4& v, float* f, cuda::TypeTag<__nv_bfloat16>) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack(const uint4& v, float* f, cuda::TypeTag<__half>) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &u[i], 4);
    const float2 t = __half22float2(h);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void unpack(const uint4& v, float* f, cuda::TypeTag<float>) {
  f[0] = __uint_as_float(v.x);
  f[1] = __uint_as_float(v.y);
  f[2] = __uint_as_float(v.z);
  f[3] = __uint_as_float(v.w);
}

// Sum of v[b] over the block for each b < BT; every thread gets the sums. red: kWarps * BT floats.
template <int BT>
__device__ __forceinline__ void block_sum(float (&v)[BT], float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int b = 0; b < BT; ++b) v[b] = warp_sum(v[b]);
  if (lane == 0)
#pragma unroll
    for (int b = 0; b < BT; ++b) red[warp * BT + b] = v[b];
  __syncthreads();
#pragma unroll
  for (int b = 0; b < BT; ++b) {
    float s = 0.0f;
    for (int w = 0; w < kWarps; ++w) s += red[w * BT + b];
    v[b] = s;
  }
  __syncthreads();
}

// The norm's weight and bias (f32, H each) into nw[0, H) and nw[H, 2H) (before the wait).
__device__ __forceinline__ void stage_norm_weights(const DecodeNormArgs& a, int64_t H, float* nw) {
  const auto same = [](float v) { return v; };
  decode_cuda::batched_copy<8>(nw, static_cast<const float*>(a.weight), threadIdx.x, H, kThreads, same);
  if (a.bias) decode_cuda::batched_copy<8>(nw + H, static_cast<const float*>(a.bias), threadIdx.x, H, kThreads, same);
}

// The input stage for rows b0 .. b0 + nb (nb <= BT) of width H: dst[b * H + i] = round(norm(r)) (see the header).
// rs: BT * H floats of shared memory (the residual stream rows); red: kWarps * BT floats; nw: the norm's weight and
// bias as stage_norm_weights leaves them.
template <typename T, int BT>
__device__ void norm_stage(DecodeInput input, const DecodeNormArgs& a, int64_t b0, int nb, int64_t H, T* dst, float* rs,
                           float* red, const float* nw, bool write_residual, bool bump_counter) {
  const T* h = static_cast<const T*>(a.h);
  const T* emb = static_cast<const T*>(a.embedding);
  const float* res_in = static_cast<const float*>(a.residual_in);
  float* res_out = static_cast<float*>(a.residual_out);
  const float* w = nw;
  const float* bias = a.bias ? nw + H : nullptr;
  float part[BT];
#pragma unroll
  for (int b = 0; b < BT; ++b) {
    part[b] = 0.0f;
    if (b >= nb) continue;
    const int64_t row = b0 + b;
    const int64_t src = input == DecodeInput::EmbedNorm ? a.tokens[row] * H : row * H;
    // kNormUnroll elements per thread are loaded before any is used (one memory round trip for rows of up to
    // kThreads * kNormUnroll), then added in order.
    for (int64_t i0 = threadIdx.x; i0 < H; i0 += kThreads * kNormUnroll) {
      float r[kNormUnroll];
#pragma unroll
      for (int u = 0; u < kNormUnroll; ++u) {
        const int64_t i = i0 + u * kThreads;
        if (i >= H) break;
        if (input == DecodeInput::EmbedNorm)
          r[u] = cuda::load(emb, src + i);
        else
          r[u] = cuda::load(h, src + i) + (res_in ? res_in[src + i] : 0.0f);
      }
#pragma unroll
      for (int u = 0; u < kNormUnroll; ++u) {
        const int64_t i = i0 + u * kThreads;
        if (i >= H) break;
        rs[b * H + i] = r[u];
        part[b] += a.rms ? r[u] * r[u] : r[u];
        if (write_residual && res_out) res_out[row * H + i] = a.round_residual ? round_to<T>(r[u]) : r[u];
      }
    }
  }
  if (bump_counter && input == DecodeInput::EmbedNorm && a.step_counter && threadIdx.x == 0) ++*a.step_counter;
  block_sum<BT>(part, red);
  float mu[BT], rstd[BT];
  const float eps = static_cast<float>(a.eps);
  if (a.rms) {
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      mu[b] = 0.0f;
      rstd[b] = 1.0f / sqrtf(part[b] / static_cast<float>(H) + eps);
    }
  } else {
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      mu[b] = part[b] / static_cast<float>(H);
      part[b] = 0.0f;
      if (b >= nb) continue;
      for (int64_t i = threadIdx.x; i < H; i += kThreads) {
        const float c = rs[b * H + i] - mu[b];
        part[b] += c * c;
      }
    }
    block_sum<BT>(part, red);
#pragma unroll
    for (int b = 0; b < BT; ++b) rstd[b] = 1.0f / sqrtf(part[b] / static_cast<float>(H) + eps);
  }
#pragma unroll
  for (int b = 0; b < BT; ++b) {
    if (b >= nb) continue;
    for (int64_t i = threadIdx.x; i < H; i += kThreads)
      dst[b * H + i] = cuda::from_compute<T>((rs[b * H + i] - mu[b]) * rstd[b] * w[i] + (bias ? bias[i] : 0.0f));
  }
}

// ---- The weight tile's bulk copy: one thread starts it, every thread waits for it on an mbarrier (sm_90); other
// architectures copy with the whole block after the wait and rely on the block barrier that follows.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Thread 0 only, before the wait: dst[0, bytes) = src[0, bytes) (both 16-byte aligned, bytes a multiple of 16).
__device__ __forceinline__ void tile_copy_start(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t b = smem_addr(bar);
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes) : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(b)
      : "memory");
#else
  (void)dst, (void)src, (void)bytes, (void)bar;
#endif
}

// Every thread, after a block barrier that follows tile_copy_start: returns once the tile is in shared memory.
__device__ __forceinline__ void tile_copy_wait(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  (void)dst, (void)src, (void)bytes;
  const uint32_t b = smem_addr(bar);
  uint32_t done = 0;
  while (!done)
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(b)
                 : "memory");
#else
  (void)bar;
  for (uint32_t i = threadIdx.x; i < bytes / 16; i += kThreads)
    static_cast<uint4*>(dst)[i] = static_cast<const uint4*>(src)[i];
  __syncthreads();
#endif
}

// Shared memory of decode_gemv_kernel, in bytes from the start (each region 16-byte aligned): the weight tile
// [rows, in], the input rows xs [BT, in] (T), the residual stream rows rs [BT, in] and the norm's weights nw [2, in]
// (f32, with a norm), x_proj's columns of the block's channels xw [kDecodeGemvRows, E] (T, MixerIn), the block's
// SiLU outputs us [BT, kDecodeGemvRows] and the reduction scratch red [kWarps, BT] (f32), and the mbarrier.
struct GemvSmem {
  size_t wt, xs, rs, nw, xw, us, red, bar, total;
};

__host__ __device__ inline GemvSmem gemv_smem(size_t tsize, int BT, int rows, int64_t in, bool norm, int64_t E) {
  auto up = [](size_t v) { return (v + 15) / 16 * 16; };
  const size_t n = static_cast<size_t>(in), bt = static_cast<size_t>(BT);
  GemvSmem s{};
  s.wt = 0;
  s.xs = up(s.wt + static_cast<size_t>(rows) * n * tsize);
  s.rs = up(s.xs + bt * n * tsize);
  s.nw = up(s.rs + (norm ? bt * n * sizeof(float) : 0));
  s.xw = up(s.nw + (norm ? 2 * n * sizeof(float) : 0));
  s.us = up(s.xw + static_cast<size_t>(kDecodeGemvRows) * static_cast<size_t>(E) * tsize);
  s.red = up(s.us + bt * kDecodeGemvRows * sizeof(float));
  s.bar = up(s.red + static_cast<size_t>(kWarps) * bt * sizeof(float));
  s.total = s.bar + sizeof(uint64_t);
  return s;
}

// BT: batch rows held per thread (>= B); RPW: output rows per warp (2 for MixerIn, whose blocks own exactly the
// kDecodeGemvRows channels of one x_proj partial; 1 doubles the block count for short Store outputs).
template <typename T, int BT, int RPW>
__global__ void __launch_bounds__(kThreads, BT <= 4 ? 4 : 2) decode_gemv_kernel(DecodeGemvParams p) {
  constexpr int VEC = kVec<T>;
  constexpr int kRows = kWarps * RPW;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t in = p.in, out = p.out, nv = in / VEC;
  const int B = static_cast<int>(p.B);
  const bool norm = p.input != DecodeInput::Plain;
  const bool mixer = p.output == DecodeOutput::MixerIn;
  const int64_t di = p.d_inner, E = mixer ? p.E : 0;
  const int K = static_cast<int>(p.K);
  const GemvSmem L = gemv_smem(sizeof(T), BT, kRows, in, norm, E);
  const uint4* wt = reinterpret_cast<const uint4*>(smem + L.wt);
  T* xs = reinterpret_cast<T*>(smem + L.xs);
  float* rs = reinterpret_cast<float*>(smem + L.rs);
  float* nw = reinterpret_cast<float*>(smem + L.nw);
  T* xw = reinterpret_cast<T*>(smem + L.xw);
  float* us = reinterpret_cast<float*>(smem + L.us);
  float* red = reinterpret_cast<float*>(smem + L.red);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + L.bar);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t blk0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t row0 = blk0 + warp * RPW;
  // The output this lane finishes: row row0 + lane / BT of batch row lane % BT.
  const int my_b = lane % BT;
  const int64_t my_o = row0 + lane / BT;
  const bool my_out = lane < RPW * BT && my_b < B && my_o < out;
  const bool my_conv = mixer && my_out && my_o < di;

  // Before the wait, what no earlier kernel of this step writes: the weight tile (bulk copy), the norm's weights,
  // the conv taps and this channel's conv state (last written by this layer one step earlier), x_proj's columns.
  const int64_t nrows = out - blk0 < kRows ? out - blk0 : kRows;
  const uint32_t tile_bytes = static_cast<uint32_t>(nrows * in * static_cast<int64_t>(sizeof(T)));
  const void* tile_src = static_cast<const T*>(p.W) + blk0 * in;
  if (threadIdx.x == 0) tile_copy_start(smem + L.wt, tile_src, tile_bytes, bar);
  if (norm) stage_norm_weights(p.norm, in, nw);
  float wc[kConvMaxK], sv[kConvMaxK], cb = 0.0f;
  T* st = nullptr;
  if (my_conv) {
    st = static_cast<T*>(p.conv_state) + static_cast<int64_t>(my_b) * (K - 1) * di + my_o;
#pragma unroll
    for (int k = 0; k < kConvMaxK; ++k) {
      if (k < K) wc[k] = cuda::load(static_cast<const T*>(p.conv_w), my_o * K + k);
      if (k + 1 < K) sv[k] = cuda::load(st, k * di);
    }
    if (p.conv_b) cb = cuda::load(static_cast<const T*>(p.conv_b), my_o);
  }
  const int nch = static_cast<int>(mixer && blk0 < di ? (di - blk0 < kRows ? di - blk0 : kRows) : 0);
  if (nch > 0) {
    // xw[c * E + e] = x_proj_w[e, blk0 + c] (transposed so that the epilogue's threads read consecutive words).
    const T* xpw = static_cast<const T*>(p.x_proj_w);
    for (int64_t i0 = threadIdx.x; i0 < kDecodeGemvRows * E; i0 += 8 * kThreads) {
      T v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int64_t i = i0 + k * kThreads, e = i / kDecodeGemvRows, c = i % kDecodeGemvRows;
        if (i < kDecodeGemvRows * E && c < nch) v[k] = xpw[e * di + blk0 + c];
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int64_t i = i0 + k * kThreads, e = i / kDecodeGemvRows, c = i % kDecodeGemvRows;
        if (i < kDecodeGemvRows * E && c < nch) xw[c * E + e] = v[k];
      }
    }
  }

  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();

  if (norm) {
    norm_stage<T, BT>(p.input, p.norm, 0, B, in, xs, rs, red, nw, blockIdx.x == 0, blockIdx.x == 0);
  } else {
    const uint4* xv = static_cast<const uint4*>(p.x);
    for (int64_t i = threadIdx.x; i < B * nv; i += kThreads) reinterpret_cast<uint4*>(xs)[i] = xv[i];
  }
  __syncthreads();
  tile_copy_wait(smem + L.wt, tile_src, tile_bytes, bar);

  float acc[RPW][BT];
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < BT; ++b) acc[r][b] = 0.0f;
  const uint4* xsv = reinterpret_cast<const uint4*>(xs);
  const int64_t lr0 = static_cast<int64_t>(warp) * RPW;  // the warp's first row in the tile
#pragma unroll 2
  for (int64_t c = lane; c < nv; c += 32) {
    float wf[RPW][VEC];
#pragma unroll
    for (int r = 0; r < RPW; ++r)
      if (lr0 + r < nrows) unpack(wt[(lr0 + r) * nv + c], wf[r], cuda::TypeTag<T>{});
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      if (b >= B) continue;
      float xf[VEC];
      unpack(xsv[b * nv + c], xf, cuda::TypeTag<T>{});
#pragma unroll
      for (int r = 0; r < RPW; ++r)
        if (lr0 + r < nrows)
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[r][b] = fmaf(wf[r][e], xf[e], acc[r][b]);
    }
  }

  float v = 0.0f;
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      const float t = warp_sum(acc[r][b]);
      if (lane == r * BT + b) v = t;
    }
  if (my_out) {
    const int64_t yi = static_cast<int64_t>(my_b) * out + my_o;
    if (p.bias) v += cuda::load(static_cast<const T*>(p.bias), my_o);
    if (!my_conv) {
      if (p.y_compute)
        static_cast<float*>(p.y)[yi] = v;
      else
        static_cast<T*>(p.y)[yi] = cuda::from_compute<T>(v);
    } else {
      const float xv = round_to<T>(v);
      const float pre = decode::conv_pre<kConvMaxK>(xv, K, wc, sv, cb);
#pragma unroll
      for (int j = 0; j + 1 < kConvMaxK; ++j)
        if (j + 2 < K) st[j * di] = cuda::from_compute<T>(sv[j + 1]);
      if (K > 1) st[(K - 2) * di] = cuda::from_compute<T>(xv);
      const float u = round_to<T>(decode::silu(pre));
      static_cast<T*>(p.y)[yi] = cuda::from_compute<T>(u);
      us[my_b * kDecodeGemvRows + (my_o - blk0)] = u;
    }
  }
  if (nch == 0) return;
  __syncthreads();
  // x_proj partial products over this block's channels (blockIdx.x is the partial index).
  float* xproj = static_cast<float*>(p.xproj);
  for (int64_t e = threadIdx.x; e < E; e += kThreads) {
    float wv[kDecodeGemvRows];
#pragma unroll
    for (int c = 0; c < kDecodeGemvRows; ++c) wv[c] = c < nch ? cuda::load(xw, c * E + e) : 0.0f;
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      if (b >= B) continue;
      float s = 0.0f;
#pragma unroll
      for (int c = 0; c < kDecodeGemvRows; ++c)
        if (c < nch) s += wv[c] * us[b * kDecodeGemvRows + c];
      xproj[(static_cast<int64_t>(blockIdx.x) * B + b) * E + e] = s;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) decode_norm_kernel(DecodeNormParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* rs = reinterpret_cast<float*>(smem);
  float* nw = rs + p.H;
  float* red = nw + 2 * p.H;
  stage_norm_weights(p.norm, p.H, nw);
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  const int64_t b = blockIdx.x;
  norm_stage<T, 1>(p.input, p.norm, b, 1, p.H, static_cast<T*>(p.y) + b * p.H, rs, red, nw, true, b == 0);
}

__global__ void decode_empty_kernel(int) {
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
}

template <typename F>
void dispatch_gemv_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(cuda::TypeTag<float>{}); return;
    case DType::BF16: f(cuda::TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: f(cuda::TypeTag<__half>{}); return;
    default: throw Error(ErrorKind::Shape, str("decode kernels on CUDA take f32, bf16 or f16, got ", dtype_name(dt)));
  }
}

template <typename T, int BT, int RPW>
void launch_gemv(const DecodeGemvParams& p) {
  const bool mixer = p.output == DecodeOutput::MixerIn;
  const size_t smem =
      gemv_smem(sizeof(T), BT, kWarps * RPW, p.in, p.input != DecodeInput::Plain, mixer ? p.E : 0).total;
  auto kernel = decode_gemv_kernel<T, BT, RPW>;
  if (smem > 48 * 1024)
    MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int64_t rows = kWarps * RPW, blocks = (p.out + rows - 1) / rows;
  decode_cuda::launch(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), smem, p.pdl, p);
}

// Store outputs with fewer than two blocks of 16 rows per SM use blocks of 8 rows: twice the blocks, so more SMs
// stream the weights (out_proj of mamba-130m: 768 rows, 96 blocks instead of 48).
template <typename T, int BT>
void launch_gemv_rows(const DecodeGemvParams& p) {
  const bool short_store =
      p.output == DecodeOutput::Store && p.out < 2 * kDecodeGemvRows * CudaContext::get().sm_count();
  if (short_store)
    launch_gemv<T, BT, 1>(p);
  else
    launch_gemv<T, BT, 2>(p);
}

// Batch rows per thread for a batch of B (the kernel's BT).
int gemv_bt(int64_t B) { return B <= 1 ? 1 : B <= 2 ? 2 : B <= 4 ? 4 : 8; }

}  // namespace

bool decode_gemv_cuda_supports(int64_t B, int64_t in, int64_t K, int64_t E, DType dtype) {
  if (B < 1 || B > kDecodeGemvMaxBatch || in < 8 || in % 8 != 0 || K < 1 || K > kConvMaxK || E < 0) return false;
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16) return false;
  // The largest shared memory a call of this shape takes: 16-row tiles with the norm.
  const size_t need = gemv_smem(dtype_size(dtype), gemv_bt(B), 2 * kWarps, in, true, E).total;
  return need <= CudaContext::get().props().sharedMemPerBlockOptin;
}

void decode_gemv_cuda(const DecodeGemvParams& p) {
  MT_ASSERT(p.B >= 0 && p.in >= 1 && p.out >= 0 && p.W && p.y, "decode_gemv: bad sizes or missing buffers");
  const bool mixer = p.output == DecodeOutput::MixerIn;
  MT_CHECK(decode_gemv_cuda_supports(std::max<int64_t>(p.B, 1), p.in, mixer ? p.K : 1, mixer ? p.E : 0, p.dtype),
           ErrorKind::Shape, "decode_gemv_cuda: batch ", p.B, " / input width ", p.in, " / conv width ", p.K,
           " / x_proj width ", p.E, " / ", dtype_name(p.dtype), " not supported (batch <= ", kDecodeGemvMaxBatch,
           ", width a multiple of 8, conv width <= ", kConvMaxK,
           ", f32, bf16 or f16, the block's weight rows and inputs within shared memory)");
  MT_CHECK(reinterpret_cast<uintptr_t>(p.W) % 16 == 0 && (p.x == nullptr || reinterpret_cast<uintptr_t>(p.x) % 16 == 0),
           ErrorKind::Shape, "decode_gemv_cuda: W and x must be 16-byte aligned");
  if (mixer)
    MT_ASSERT(p.out == 2 * p.d_inner && p.conv_w && (p.K == 1 || p.conv_state) && p.x_proj_w && p.xproj && p.E >= 1,
              "decode_gemv: bad mixer-in arguments");
  MT_ASSERT(p.input != DecodeInput::Plain || p.x, "decode_gemv: missing input");
  if (p.B == 0 || p.out == 0) return;
  dispatch_gemv_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.B <= 1)
      launch_gemv_rows<T, 1>(p);
    else if (p.B <= 2)
      launch_gemv_rows<T, 2>(p);
    else if (p.B <= 4)
      launch_gemv_rows<T, 4>(p);
    else
      launch_gemv_rows<T, 8>(p);
  });
}

void decode_norm_cuda(const DecodeNormParams& p) {
  MT_ASSERT(p.B >= 0 && p.H >= 1 && p.y && p.input != DecodeInput::Plain && p.norm.weight,
            "decode_norm: bad arguments");
  if (p.B == 0) return;
  MT_CHECK(p.B <= 0x7fffffff, ErrorKind::Shape, "decode_norm_cuda: batch ", p.B);
  dispatch_gemv_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const size_t smem = static_cast<size_t>(3 * p.H) * sizeof(float) + kWarps * sizeof(float);
    auto kernel = decode_norm_kernel<T>;
    if (smem > 48 * 1024)
      MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    decode_cuda::launch(kernel, dim3(static_cast<unsigned>(p.B)), dim3(kThreads), smem, p.pdl, p);
  });
}

void decode_empty_cuda(int64_t blocks, bool pdl) {
  MT_ASSERT(blocks >= 1 && blocks <= 0x7fffffff, "decode_empty: bad block count");
  decode_cuda::launch(decode_empty_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, pdl, 0);
}

}  // namespace mt::kernels
