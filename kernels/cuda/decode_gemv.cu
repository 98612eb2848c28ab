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
#include <algorithm>

#include "kernels/cuda/decode_gemv.cuh"

namespace mt::kernels {

namespace {

using namespace decode_cuda;

template <typename T, int BT, int RPW>
__global__ void __launch_bounds__(kThreads, 2) decode_gemv_kernel(DecodeGemvParams p) {
  gemv_block<T, BT, RPW>(p, blockIdx.x, false, [] {
    pdl_wait();
    pdl_launch_dependents();
  });
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
