// CUDA AdamW: one tensor per launch (adamw_cuda) or up to kAdamWMaxTensors per launch (adamw_multi_cuda), both
// through the same per-element update, which also writes the bf16 / f16 weight copy when there is one.
#include <cstdint>
#include <map>
#include <type_traits>
#include <utility>

#include "core/cuda/dtype_cuda.cuh"
#include "kernels/adamw.h"

namespace mt::kernels {

namespace {

struct Hyper {
  float lr, beta1, beta2, eps, bias_correction1, bias_correction2, grad_scale;
};

Hyper hyper_of(const AdamWParams& p) {
  return {p.lr, p.beta1, p.beta2, p.eps, p.bias_correction1, p.bias_correction2, p.grad_scale};
}

// C: the weight copy's storage type (__nv_bfloat16 / __half), or void for none.
// Every rounding is spelled out (__fmaf_rn and friends are never fused or reordered), so each instantiation, with
// or without a copy, in either kernel, gives the same bits; left to itself the compiler contracted a * b + c into
// FMAs differently per instantiation, and a tensor's update depended on whether it had a copy.
template <typename G, typename C>
__device__ __forceinline__ void update_one(const Hyper& h, float wd, float* param, const G* g, float* exp_avg,
                                           float* exp_avg_sq, void* copy, int64_t i) {
  const float gi = __fmul_rn(static_cast<float>(cuda::load(g, i)), h.grad_scale);
  const float m = __fmaf_rn(h.beta1, exp_avg[i], __fmul_rn(1 - h.beta1, gi));                    // b1 m + (1-b1) g
  const float v = __fmaf_rn(h.beta2, exp_avg_sq[i], __fmul_rn(__fmul_rn(1 - h.beta2, gi), gi));  // b2 v + (1-b2) g^2
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  const float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(v, h.bias_correction2)), h.eps);
  const float p = param[i];
  const float step = __fmaf_rn(wd, p, __fdiv_rn(__fdiv_rn(m, h.bias_correction1), denom));  // m^ / denom + wd p
  const float w = __fmaf_rn(-h.lr, step, p);                                                // p - lr * step
  param[i] = w;
  if constexpr (!std::is_void_v<C>) static_cast<C*>(copy)[i] = cuda::from_compute<C>(w);
}

// Four consecutive elements as 16-byte (f32) and 8-byte (16-bit) vectors, the arithmetic of update_one element by
// element: the same bits, a quarter of the memory instructions. Pointers 16-byte aligned (8 for 16-bit data).
template <typename G, typename C>
__device__ __forceinline__ void update_four(const Hyper& h, float wd, float* param, const G* g, float* exp_avg,
                                            float* exp_avg_sq, void* copy, int64_t i4) {
  struct alignas(4 * sizeof(G)) G4 {
    G v[4];
  };
  float4 p4 = reinterpret_cast<const float4*>(param)[i4];
  float4 m4 = reinterpret_cast<const float4*>(exp_avg)[i4];
  float4 v4 = reinterpret_cast<const float4*>(exp_avg_sq)[i4];
  const G4 g4 = reinterpret_cast<const G4*>(g)[i4];
  float* pp = &p4.x;
  float* mm = &m4.x;
  float* vv = &v4.x;
  [[maybe_unused]] struct alignas(8) { std::conditional_t<std::is_void_v<C>, char, C> v[4]; } c4;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float p1 = pp[j], m1 = mm[j], v1 = vv[j];
    update_one<G, C>(h, wd, &p1, &g4.v[j], &m1, &v1, &c4.v[j], 0);
    pp[j] = p1;
    mm[j] = m1;
    vv[j] = v1;
  }
  reinterpret_cast<float4*>(param)[i4] = p4;
  reinterpret_cast<float4*>(exp_avg)[i4] = m4;
  reinterpret_cast<float4*>(exp_avg_sq)[i4] = v4;
  if constexpr (!std::is_void_v<C>) reinterpret_cast<decltype(c4)*>(copy)[i4] = c4;
}

// Elements [0, n) by threads start, start + stride, ...: four at a time where vec (aligned; f32 / 16-bit
// gradients), then the last n % 4 one at a time.
template <typename G, typename C>
__device__ __forceinline__ void update_range(const Hyper& h, float wd, float* param, const G* g, float* exp_avg,
                                             float* exp_avg_sq, void* copy, int64_t n, bool vec, int64_t start,
                                             int64_t stride) {
  int64_t done = 0;
  if constexpr (!std::is_same_v<G, double>) {
    if (vec) {
      const int64_t n4 = n / 4;
      for (int64_t i4 = start; i4 < n4; i4 += stride) update_four<G, C>(h, wd, param, g, exp_avg, exp_avg_sq, copy, i4);
      done = n4 * 4;
    }
  }
  for (int64_t i = done + start; i < n; i += stride) update_one<G, C>(h, wd, param, g, exp_avg, exp_avg_sq, copy, i);
}

template <typename G, typename C>
__global__ void adamw_kernel(AdamWParams p, Hyper h, bool vec) {
  update_range<G, C>(h, p.weight_decay, p.param, static_cast<const G*>(p.grad), p.exp_avg, p.exp_avg_sq, p.copy, p.n,
                     vec, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                     static_cast<int64_t>(gridDim.x) * blockDim.x);
}

struct Batch {
  int count;
  float* param[kAdamWMaxTensors];
  const void* grad[kAdamWMaxTensors];
  float* exp_avg[kAdamWMaxTensors];
  float* exp_avg_sq[kAdamWMaxTensors];
  void* copy[kAdamWMaxTensors];
  int64_t n[kAdamWMaxTensors];
  float wd[kAdamWMaxTensors];
  bool vec[kAdamWMaxTensors];
};
static_assert(sizeof(Batch) + sizeof(Hyper) < 4000, "kernel argument too large");

template <typename G, typename C>
__global__ void adamw_multi_kernel(Batch b, Hyper h) {
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int k = 0; k < b.count; ++k)
    update_range<G, C>(h, b.wd[k], b.param[k], static_cast<const G*>(b.grad[k]), b.exp_avg[k], b.exp_avg_sq[k],
                       b.copy[k], b.n[k], b.vec[k], start, stride);
}

bool aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Whether a tensor's buffers allow update_four: f32 state 16-byte aligned, 16-bit gradient / copy 8-byte aligned.
bool vectorizable(const float* param, const void* grad, DType grad_dtype, const float* m, const float* v,
                  const void* copy) {
  if (grad_dtype == DType::F64) return false;
  return aligned(param, 16) && aligned(m, 16) && aligned(v, 16) && aligned(grad, grad_dtype == DType::F32 ? 16 : 8) &&
         (copy == nullptr || aligned(copy, 8));
}

// The grid for a launch over tensors of at most n elements, taken four at a time.
int grid_for_update(int64_t n) { return cuda::grid_for((n + 3) / 4); }

// Call f(TypeTag<C>{}) with C the copy's storage type: void without a copy, else __nv_bfloat16 / __half.
template <typename F>
void dispatch_copy(const void* copy, DType dt, F&& f) {
  if (!copy) return f(cuda::TypeTag<void>{});
  switch (dt) {
    case DType::BF16: return f(cuda::TypeTag<__nv_bfloat16>{});
    case DType::F16: return f(cuda::TypeTag<__half>{});
    default: throw Error(ErrorKind::Shape, str("adamw: weight copy dtype ", dtype_name(dt), " (expected bf16 or f16)"));
  }
}

}  // namespace

void adamw_cuda(const AdamWParams& p) {
  if (p.n == 0) return;
  cuda::dispatch_float(p.grad_dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    dispatch_copy(p.copy, p.copy_dtype, [&](auto ctag) {
      using C = typename decltype(ctag)::type;
      const bool vec = vectorizable(p.param, p.grad, p.grad_dtype, p.exp_avg, p.exp_avg_sq, p.copy);
      adamw_kernel<G, C><<<grid_for_update(p.n), 256, 0, cuda::stream()>>>(p, hyper_of(p), vec);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void adamw_multi_cuda(const AdamWParams& common, const std::vector<AdamWTensor>& ts) {
  const Hyper h = hyper_of(common);
  // One group per (gradient dtype, copy dtype); F32 stands for "no copy".
  std::map<std::pair<DType, DType>, std::vector<const AdamWTensor*>> groups;
  for (const AdamWTensor& t : ts)
    if (t.n > 0) groups[{t.grad_dtype, t.copy ? t.copy_dtype : DType::F32}].push_back(&t);
  for (auto& kv : groups) {
    const std::vector<const AdamWTensor*>& list = kv.second;
    cuda::dispatch_float(kv.first.first, [&](auto tag) {
      using G = typename decltype(tag)::type;
      dispatch_copy(list.front()->copy, kv.first.second, [&](auto ctag) {
        using C = typename decltype(ctag)::type;
        for (size_t first = 0; first < list.size(); first += kAdamWMaxTensors) {
          Batch b{};
          int64_t largest = 0;
          for (size_t k = first; k < list.size() && k < first + kAdamWMaxTensors; ++k) {
            const AdamWTensor& t = *list[k];
            const int j = b.count++;
            b.param[j] = t.param;
            b.grad[j] = t.grad;
            b.exp_avg[j] = t.exp_avg;
            b.exp_avg_sq[j] = t.exp_avg_sq;
            b.copy[j] = t.copy;
            b.n[j] = t.n;
            b.wd[j] = t.weight_decay;
            b.vec[j] = vectorizable(t.param, t.grad, t.grad_dtype, t.exp_avg, t.exp_avg_sq, t.copy);
            largest = std::max(largest, t.n);
          }
          adamw_multi_kernel<G, C><<<grid_for_update(largest), 256, 0, cuda::stream()>>>(b, h);
          MT_CUDA_CHECK_LAUNCH();
        }
      });
    });
  }
}

}  // namespace mt::kernels
