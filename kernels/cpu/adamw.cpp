#include "kernels/adamw.h"

#include <cmath>

#include "core/error.h"

namespace mt::kernels {

namespace {
template <typename G>
void update(const AdamWParams& p, const G* g) {
  uint16_t* copy = static_cast<uint16_t*>(p.copy);
  const bool bf16 = p.copy_dtype == DType::BF16;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.n; ++i) {
    const float gi = static_cast<float>(g[i]) * p.grad_scale;
    const float m = p.beta1 * p.exp_avg[i] + (1 - p.beta1) * gi;
    const float v = p.beta2 * p.exp_avg_sq[i] + (1 - p.beta2) * gi * gi;
    p.exp_avg[i] = m;
    p.exp_avg_sq[i] = v;
    const float denom = std::sqrt(v / p.bias_correction2) + p.eps;
    p.param[i] -= p.lr * ((m / p.bias_correction1) / denom + p.weight_decay * p.param[i]);
    if (copy) copy[i] = bf16 ? float_to_bf16(p.param[i]) : float_to_f16(p.param[i]);
  }
}
}  // namespace

void adamw_cpu(const AdamWParams& p) {
  if (p.copy && !is_half(p.copy_dtype))
    throw Error(ErrorKind::Shape,
                str("adamw_cpu: weight copy dtype ", dtype_name(p.copy_dtype), " (expected bf16 or f16)"));
  switch (p.grad_dtype) {
    case DType::F32: return update(p, static_cast<const float*>(p.grad));
    case DType::F64: return update(p, static_cast<const double*>(p.grad));
    default:
      throw Error(ErrorKind::Shape,
                  str("adamw_cpu: gradient dtype ", dtype_name(p.grad_dtype), " (expected f32 or f64)"));
  }
}

}  // namespace mt::kernels
