// CUDA AdamW: one tensor per launch (adamw_cuda) or up to kAdamWMaxTensors per launch (adamw_multi_cuda), both
// through the same per-element update, which also writes the bf16 / f16 weight copy when there is one.
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

template <typename G, typename C>
__global__ void adamw_kernel(AdamWParams p, Hyper h) {
  const G* g = static_cast<const G*>(p.grad);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    update_one<G, C>(h, p.weight_decay, p.param, g, p.exp_avg, p.exp_avg_sq, p.copy, i);
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
};
static_assert(sizeof(Batch) + sizeof(Hyper) < 4000, "kernel argument too large");

template <typename G, typename C>
__global__ void adamw_multi_kernel(Batch b, Hyper h) {
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int k = 0; k < b.count; ++k) {
    const G* g = static_cast<const G*>(b.grad[k]);
    for (int64_t i = start; i < b.n[k]; i += stride)
      update_one<G, C>(h, b.wd[k], b.param[k], g, b.exp_avg[k], b.exp_avg_sq[k], b.copy[k], i);
  }
}

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
      adamw_kernel<G, C><<<cuda::grid_for(p.n), 256, 0, cuda::stream()>>>(p, hyper_of(p));
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
            largest = std::max(largest, t.n);
          }
          adamw_multi_kernel<G, C><<<cuda::grid_for(largest), 256, 0, cuda::stream()>>>(b, h);
          MT_CUDA_CHECK_LAUNCH();
        }
      });
    });
  }
}

}  // namespace mt::kernels
