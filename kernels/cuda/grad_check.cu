#include <vector>

#include "core/allocator.h"
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/grad_check.h"

namespace mt::kernels {

namespace {

constexpr int kBlock = 256;
// Enough blocks per buffer to fill an H100 (132 SMs x 2048 threads ~ 1024 blocks of 256) while keeping the partial
// buffer small for models with hundreds of tensors.
constexpr int kMaxBlocksPerBuffer = 1024;

// Raw bits of each storage type and the exponent mask that marks inf / NaN (all-ones exponent).
template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = uint32_t;
  static constexpr U kMask = 0x7f800000u;
};
template <>
struct Bits<double> {
  using U = unsigned long long;
  static constexpr U kMask = 0x7ff0000000000000ull;
};
template <>
struct Bits<__nv_bfloat16> {
  using U = uint16_t;
  static constexpr U kMask = 0x7f80u;
};
template <>
struct Bits<__half> {
  using U = uint16_t;
  static constexpr U kMask = 0x7c00u;
};

// *flag = 1 when any element of g is inf or NaN. Every block that finds one writes the same value (a benign race);
// nobody ever writes 0 here, the host zeroes the flags before the launches.
template <typename T>
__global__ void nonfinite_kernel(const T* g, int64_t n, int32_t* flag) {
  using U = typename Bits<T>::U;
  const U mask = Bits<T>::kMask;
  const U* u = reinterpret_cast<const U*>(g);
  int bad = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    bad |= (u[i] & mask) == mask ? 1 : 0;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// Sum over the block (kBlock threads) in a fixed order: warp shuffles, then warp sums in order. Valid in thread 0.
__device__ double block_sum(double s) {
  __shared__ double warp_sums[kBlock / 32];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = s;
  __syncthreads();
  double t = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kBlock / 32; ++w) t += warp_sums[w];
  }
  return t;
}

// partial[b] = sum of g_i^2 (in double) over the elements block b visits.
template <typename T>
__global__ void sumsq_partial_kernel(const T* g, int64_t n, double* partial) {
  double s = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(cuda::load(g, i));
    s += v * v;
  }
  const double t = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

// One block per buffer: sums[b] = sum of partials[b * kMaxBlocksPerBuffer ...] (kMaxBlocksPerBuffer slots, the
// unused ones zeroed) in a fixed order.
__global__ void sumsq_finalize_kernel(const double* partials, double* sums) {
  const double* p = partials + static_cast<int64_t>(blockIdx.x) * kMaxBlocksPerBuffer;
  double s = 0;
  for (int j = threadIdx.x; j < kMaxBlocksPerBuffer; j += blockDim.x) s += p[j];
  const double t = block_sum(s);
  if (threadIdx.x == 0) sums[blockIdx.x] = t;
}

int blocks_for(int64_t n) {
  const int b = cuda::grid_for(n, kBlock);
  return b < kMaxBlocksPerBuffer ? b : kMaxBlocksPerBuffer;
}

// Device scratch from the caching allocator, returned when the scope ends (also when a CUDA call throws).
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  Device dev;
  Scratch(size_t b, Device d) : bytes(b), dev(d) { p = alloc_bytes(bytes, dev); }
  ~Scratch() {
    if (p) free_bytes(p, bytes, dev);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

Device current_device() { return Device::cuda(CudaContext::get().device()); }

}  // namespace

std::vector<uint8_t> grad_nonfinite_flags_cuda(const std::vector<GradBuffer>& bufs) {
  const size_t t = bufs.size();
  std::vector<uint8_t> out(t, 0);
  if (t == 0) return out;
  Scratch flags(sizeof(int32_t) * t, current_device());
  int32_t* d_flags = static_cast<int32_t*>(flags.p);
  MT_CUDA_CHECK(cudaMemsetAsync(d_flags, 0, sizeof(int32_t) * t, cuda::stream()));
  for (size_t i = 0; i < t; ++i) {
    const GradBuffer& b = bufs[i];
    if (b.n == 0) continue;
    cuda::dispatch_float(b.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      nonfinite_kernel<T>
          <<<blocks_for(b.n), kBlock, 0, cuda::stream()>>>(static_cast<const T*>(b.data), b.n, d_flags + i);
      MT_CUDA_CHECK_LAUNCH();
    });
  }
  std::vector<int32_t> host(t);
  MT_CUDA_CHECK(cudaMemcpyAsync(host.data(), d_flags, sizeof(int32_t) * t, cudaMemcpyDeviceToHost, cuda::stream()));
  MT_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));  // the one synchronisation
  for (size_t i = 0; i < t; ++i) out[i] = host[i] != 0 ? 1 : 0;
  return out;
}

std::vector<double> grad_sum_squares_cuda(const std::vector<GradBuffer>& bufs) {
  const size_t t = bufs.size();
  std::vector<double> sums(t, 0.0);
  if (t == 0) return sums;
  // One allocation: [partials: kMaxBlocksPerBuffer slots per buffer][sums: t]. Fixed slots per buffer keep the
  // layout known to the finalize kernel without a host-to-device copy (a pageable copy could synchronise).
  const size_t slots = static_cast<size_t>(kMaxBlocksPerBuffer) * t;
  Scratch scratch(sizeof(double) * (slots + t), current_device());
  double* d_partials = static_cast<double*>(scratch.p);
  double* d_sums = d_partials + slots;
  MT_CUDA_CHECK(cudaMemsetAsync(d_partials, 0, sizeof(double) * slots, cuda::stream()));
  for (size_t i = 0; i < t; ++i) {
    const GradBuffer& b = bufs[i];
    if (b.n == 0) continue;
    cuda::dispatch_float(b.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      sumsq_partial_kernel<T><<<blocks_for(b.n), kBlock, 0, cuda::stream()>>>(static_cast<const T*>(b.data), b.n,
                                                                              d_partials + i * kMaxBlocksPerBuffer);
      MT_CUDA_CHECK_LAUNCH();
    });
  }
  sumsq_finalize_kernel<<<static_cast<unsigned>(t), kBlock, 0, cuda::stream()>>>(d_partials, d_sums);
  MT_CUDA_CHECK_LAUNCH();
  MT_CUDA_CHECK(cudaMemcpyAsync(sums.data(), d_sums, sizeof(double) * t, cudaMemcpyDeviceToHost, cuda::stream()));
  MT_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));  // the one synchronisation
  return sums;
}

}  // namespace mt::kernels
