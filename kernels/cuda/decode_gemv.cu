// CUDA fused decode projections (math in kernels/decode_gemv.h).
//
// decode_gemv: blocks of 8 warps own 16 consecutive output rows (2 per warp; 8 rows, 1 per warp, for short Store
// outputs). Batch 1 decoding is bound by reading the weights, so the kernel is built around keeping many weight
// loads in flight:
//   1. each lane loads its first stage of the warp's rows (4 x 16 bytes per row, lanes interleaved so a warp reads
//      512 contiguous bytes per row and vector; two stages with one row per warp) before waiting for the previous
//      kernel (PDL, see decode_launch.cuh): weights never depend on it, so their latency overlaps the previous
//      kernel's tail; so do the conv taps and conv state the epilogue needs;
//   2. the input stage (copy, or residual add + norm, computed redundantly by every block: a few KB) writes the
//      B input rows into shared memory in the storage dtype;
//   3. the stages are double-buffered; each weight vector is unpacked once and multiplied with the B input vectors
//      (f32 accumulation);
//   4. warp sums; lane r * BT + b owns output (row r, batch row b) and runs the epilogue (store, or the conv step
//      and SiLU for in_proj's x half); then the block sums x_proj's partial products over its 16 channels.
// At most 2 blocks of 256 threads per SM (128 registers), up to 32 KB of weight loads in flight per block.
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
constexpr int kStage = 4;  // 16-byte vectors per lane and row per stage
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

// The input stage for rows b0 .. b0 + nb (nb <= BT) of width H: dst[b * H + i] = round(norm(r)) (see the header).
// rs: BT * H floats of shared memory (the residual stream rows); red: kWarps * BT floats.
template <typename T, int BT>
__device__ void norm_stage(DecodeInput input, const DecodeNormArgs& a, int64_t b0, int nb, int64_t H, T* dst, float* rs,
                           float* red, bool write_residual, bool bump_counter) {
  const T* h = static_cast<const T*>(a.h);
  const T* emb = static_cast<const T*>(a.embedding);
  const float* res_in = static_cast<const float*>(a.residual_in);
  float* res_out = static_cast<float*>(a.residual_out);
  const float* w = static_cast<const float*>(a.weight);
  const float* bias = static_cast<const float*>(a.bias);
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

// Shared memory of decode_gemv_kernel<T, BT, *> for input width `in`, in bytes.
template <typename T>
size_t gemv_smem_bytes(int BT, int64_t in, bool norm) {
  return static_cast<size_t>(BT) * in * sizeof(T) + (norm ? static_cast<size_t>(BT) * in * sizeof(float) : 0) +
         static_cast<size_t>(BT) * kDecodeGemvRows * sizeof(float) + static_cast<size_t>(kWarps) * BT * sizeof(float);
}

// BT: batch rows held per thread (>= B); RPW: output rows per warp (2 for MixerIn, whose blocks own exactly the
// kDecodeGemvRows channels of one x_proj partial; 1 doubles the block count for short Store outputs).
template <typename T, int BT, int RPW>
__global__ void __launch_bounds__(kThreads, 2) decode_gemv_kernel(DecodeGemvParams p) {
  constexpr int VEC = kVec<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t in = p.in, out = p.out, nv = in / VEC;
  const int B = static_cast<int>(p.B);
  const bool norm = p.input != DecodeInput::Plain;
  const bool mixer = p.output == DecodeOutput::MixerIn;
  const int64_t di = p.d_inner;
  const int K = static_cast<int>(p.K);
  T* xs = reinterpret_cast<T*>(smem);
  float* rs = reinterpret_cast<float*>(smem + static_cast<size_t>(BT) * in * sizeof(T));
  float* us = rs + (norm ? BT * in : 0);
  float* red = us + BT * kDecodeGemvRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t blk0 = static_cast<int64_t>(blockIdx.x) * kWarps * RPW;
  const int64_t row0 = blk0 + warp * RPW;
  const uint4* Wv = static_cast<const uint4*>(p.W);
  // The output this lane finishes: row row0 + lane / BT of batch row lane % BT.
  const int my_b = lane % BT;
  const int64_t my_o = row0 + lane / BT;
  const bool my_out = lane < RPW * BT && my_b < B && my_o < out;
  const bool my_conv = mixer && my_out && my_o < di;

  auto load_stage = [&](uint4(&dst)[RPW][kStage], int64_t s) {
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
      for (int j = 0; j < kStage; ++j) {
        const int64_t c = s + lane + 32 * j;
        dst[r][j] = (row0 + r < out && c < nv) ? __ldg(Wv + (row0 + r) * nv + c) : make_uint4(0, 0, 0, 0);
      }
  };
  // One output row per warp: two stages in flight from the start, so rows of up to 2 * 32 * kStage vectors
  // (out_proj's 1536 bf16 inputs of mamba-130m, 2048 of 370m) are read in full before the wait. Two rows per warp
  // keep one (the registers of a second would spill).
  constexpr bool kPrefetch2 = RPW == 1;
  constexpr int64_t kStageVecs = 32 * kStage;
  uint4 w[RPW][kStage], wn[RPW][kStage];
  load_stage(w, 0);
  if (kPrefetch2 && nv > kStageVecs) load_stage(wn, kStageVecs);
  // Also independent of the previous kernel: the conv taps and this channel's conv state (last written by this layer
  // one step earlier), and x_proj's columns of this block (to L2).
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
  if (mixer && blk0 < di && threadIdx.x < p.E)
    decode_cuda::prefetch_l2(static_cast<const T*>(p.x_proj_w) + threadIdx.x * di + blk0);

  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();

  if (norm) {
    norm_stage<T, BT>(p.input, p.norm, 0, B, in, xs, rs, red, blockIdx.x == 0, blockIdx.x == 0);
  } else {
    const uint4* xv = static_cast<const uint4*>(p.x);
    for (int64_t i = threadIdx.x; i < B * nv; i += kThreads) reinterpret_cast<uint4*>(xs)[i] = xv[i];
  }
  __syncthreads();

  float acc[RPW][BT];
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < BT; ++b) acc[r][b] = 0.0f;
  const uint4* xsv = reinterpret_cast<const uint4*>(xs);
  for (int64_t s = 0; s < nv; s += kStageVecs) {
    if (!kPrefetch2 && s + kStageVecs < nv) load_stage(wn, s + kStageVecs);
#pragma unroll
    for (int j = 0; j < kStage; ++j) {
      const int64_t c = s + lane + 32 * j;
      if (c >= nv) continue;
      float wf[RPW][VEC];
#pragma unroll
      for (int r = 0; r < RPW; ++r) unpack(w[r][j], wf[r], cuda::TypeTag<T>{});
#pragma unroll
      for (int b = 0; b < BT; ++b) {
        if (b >= B) continue;
        float xf[VEC];
        unpack(xsv[b * nv + c], xf, cuda::TypeTag<T>{});
#pragma unroll
        for (int r = 0; r < RPW; ++r)
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[r][b] = fmaf(wf[r][e], xf[e], acc[r][b]);
      }
    }
    if (s + kStageVecs < nv) {
#pragma unroll
      for (int r = 0; r < RPW; ++r)
#pragma unroll
        for (int j = 0; j < kStage; ++j) w[r][j] = wn[r][j];
      if (kPrefetch2 && s + 2 * kStageVecs < nv) load_stage(wn, s + 2 * kStageVecs);
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
  if (!mixer || blk0 >= di) return;
  __syncthreads();
  // x_proj partial products over this block's channels (blockIdx.x is the partial index).
  const int nch = static_cast<int>(di - blk0 < kDecodeGemvRows ? di - blk0 : kDecodeGemvRows);
  const T* xw = static_cast<const T*>(p.x_proj_w);
  float* xproj = static_cast<float*>(p.xproj);
  for (int64_t e = threadIdx.x; e < p.E; e += kThreads) {
    float wv[kDecodeGemvRows];
#pragma unroll
    for (int c = 0; c < kDecodeGemvRows; ++c) wv[c] = c < nch ? cuda::load(xw, e * di + blk0 + c) : 0.0f;
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      if (b >= B) continue;
      float s = 0.0f;
#pragma unroll
      for (int c = 0; c < kDecodeGemvRows; ++c)
        if (c < nch) s += wv[c] * us[b * kDecodeGemvRows + c];
      xproj[(static_cast<int64_t>(blockIdx.x) * B + b) * p.E + e] = s;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) decode_norm_kernel(DecodeNormParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* rs = reinterpret_cast<float*>(smem);
  float* red = rs + p.H;
  decode_cuda::pdl_wait();
  decode_cuda::pdl_launch_dependents();
  const int64_t b = blockIdx.x;
  norm_stage<T, 1>(p.input, p.norm, b, 1, p.H, static_cast<T*>(p.y) + b * p.H, rs, red, true, b == 0);
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
  const size_t smem = gemv_smem_bytes<T>(BT, p.in, p.input != DecodeInput::Plain);
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

}  // namespace

bool decode_gemv_cuda_supports(int64_t B, int64_t in, int64_t K) {
  if (B < 1 || B > kDecodeGemvMaxBatch || in < 8 || in % 8 != 0 || K < 1 || K > kConvMaxK) return false;
  const size_t worst = gemv_smem_bytes<float>(static_cast<int>(kDecodeGemvMaxBatch), in, true);
  return worst <= CudaContext::get().props().sharedMemPerBlockOptin;
}

void decode_gemv_cuda(const DecodeGemvParams& p) {
  MT_ASSERT(p.B >= 0 && p.in >= 1 && p.out >= 0 && p.W && p.y, "decode_gemv: bad sizes or missing buffers");
  MT_CHECK(decode_gemv_cuda_supports(std::max<int64_t>(p.B, 1), p.in, p.output == DecodeOutput::MixerIn ? p.K : 1),
           ErrorKind::Shape, "decode_gemv_cuda: batch ", p.B, " / input width ", p.in, " / conv width ", p.K,
           " not supported (batch <= ", kDecodeGemvMaxBatch, ", width a multiple of 8, conv width <= ", kConvMaxK, ")");
  MT_CHECK(reinterpret_cast<uintptr_t>(p.W) % 16 == 0 && (p.x == nullptr || reinterpret_cast<uintptr_t>(p.x) % 16 == 0),
           ErrorKind::Shape, "decode_gemv_cuda: W and x must be 16-byte aligned");
  if (p.output == DecodeOutput::MixerIn)
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
    const size_t smem = static_cast<size_t>(p.H) * sizeof(float) + kWarps * sizeof(float);
    auto kernel = decode_norm_kernel<T>;
    if (smem > 48 * 1024)
      MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    decode_cuda::launch(kernel, dim3(static_cast<unsigned>(p.B)), dim3(kThreads), smem, p.pdl, p);
  });
}

}  // namespace mt::kernels
