#include "optim/grad_check.h"

#include <cmath>
#include <limits>

#include "autograd/autograd.h"
#include "autograd/ops/dispatch.h"
#include "kernels/grad_check.h"

namespace mt::optim {

namespace {

// The gradients of params, packed, with the index of their parameter; CPU and CUDA ones apart. The packed tensors
// are kept alive here until the kernels that read them have finished.
struct Grads {
  std::vector<Tensor> keep;
  std::vector<int64_t> cpu_index, cuda_index;
  std::vector<kernels::GradBuffer> cpu, cuda;
};

Grads collect(const std::vector<Tensor*>& params, const char* fn) {
  Grads out;
  for (size_t i = 0; i < params.size(); ++i) {
    MT_CHECK_SHAPE(params[i] != nullptr, fn, ": parameter ", i, " is a null pointer");
    Tensor g = grad(*params[i]);
    if (!g.defined()) continue;
    MT_CHECK_SHAPE(is_floating(g.dtype()), fn, ": gradient of parameter ", i, " is ", g.describe(),
                   " (expected f32, f64, bf16 or f16)");
    g = g.contiguous();
    kernels::GradBuffer b;
    b.data = g.data_ptr();
    b.dtype = g.dtype();
    b.n = g.numel();
    if (g.is_cuda()) {
      out.cuda_index.push_back(static_cast<int64_t>(i));
      out.cuda.push_back(b);
    } else {
      out.cpu_index.push_back(static_cast<int64_t>(i));
      out.cpu.push_back(b);
    }
    out.keep.push_back(std::move(g));
  }
  return out;
}

}  // namespace

int64_t first_nonfinite_grad(const std::vector<Tensor*>& params) {
  Grads g = collect(params, "first_nonfinite_grad");
  int64_t first = -1;
  if (!g.cuda.empty()) {
    const std::vector<uint8_t> flags =
        ops::run_cuda("first_nonfinite_grad", MT_CUDA_KERNEL(grad_nonfinite_flags_cuda), g.cuda);
    for (size_t k = 0; k < flags.size(); ++k) {
      if (flags[k]) {
        first = g.cuda_index[k];
        break;
      }
    }
  }
  // CPU gradients in order; stop at the first bad one (a CUDA hit with a smaller index wins anyway).
  for (size_t k = 0; k < g.cpu.size(); ++k) {
    if (first >= 0 && g.cpu_index[k] > first) break;
    const OpTimeScope timed("first_nonfinite_grad", /*cuda=*/false);
    if (!kernels::grad_all_finite_cpu(g.cpu[k])) {
      first = g.cpu_index[k];
      break;
    }
  }
  return first;
}

namespace {

// Per-parameter sums of squares (0 for parameters without a gradient).
std::vector<double> sums_of_squares(const std::vector<Tensor*>& params) {
  Grads g = collect(params, "grad_global_norm");
  // Per-parameter sums of squares, then added in parameter order: the same total whatever the device split.
  std::vector<double> sums(params.size(), 0.0);
  if (!g.cuda.empty()) {
    const std::vector<double> s = ops::run_cuda("grad_global_norm", MT_CUDA_KERNEL(grad_sum_squares_cuda), g.cuda);
    for (size_t k = 0; k < s.size(); ++k) sums[static_cast<size_t>(g.cuda_index[k])] = s[k];
  }
  for (size_t k = 0; k < g.cpu.size(); ++k) {
    const OpTimeScope timed("grad_global_norm", /*cuda=*/false);
    sums[static_cast<size_t>(g.cpu_index[k])] = kernels::grad_sum_squares_cpu(g.cpu[k]);
  }
  return sums;
}

double norm_of(const std::vector<double>& sums) {
  double total = 0.0;
  for (double s : sums) total += s;  // NaN / inf propagate
  return std::sqrt(total);
}

}  // namespace

double grad_global_norm(const std::vector<Tensor*>& params) { return norm_of(sums_of_squares(params)); }

GradHealth grad_health(const std::vector<Tensor*>& params) {
  const std::vector<double> sums = sums_of_squares(params);
  GradHealth h;
  for (double s : sums) {
    if (!std::isfinite(s)) {
      h.first_bad = first_nonfinite_grad(params);
      if (h.first_bad == -1) h.first_bad = -3;
      h.norm = std::numeric_limits<double>::quiet_NaN();
      return h;
    }
  }
  h.norm = norm_of(sums);
  if (!std::isfinite(h.norm)) h.first_bad = -3;
  return h;
}

double clip_factor(double norm, double max_norm) {
  if (!std::isfinite(norm)) return std::numeric_limits<double>::quiet_NaN();
  if (!(max_norm > 0.0)) return 1.0;
  return norm > max_norm ? max_norm / norm : 1.0;
}

}  // namespace mt::optim
