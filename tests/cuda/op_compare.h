// Helpers for the CUDA-vs-CPU op tests (test_cuda_linalg / test_cuda_nn / test_cuda_shape): run one op forward
// and backward on a device in a dtype, and compare with the CPU f64 reference on the same (dtype-rounded) inputs.
#pragma once

#include <functional>
#include <vector>

#include "../test_util.h"

namespace mt::test {

struct OpRun {
  std::vector<double> out;
  std::vector<std::vector<double>> grads;  // one per float input (empty for integer inputs)
};

// Float inputs are converted to `dt` (then to f64 for the reference, so both see the same rounded values), moved
// to `dev` and marked requires_grad; integer inputs are only moved. The upstream gradient is a fixed random tensor
// rounded to `dt`.
inline OpRun run_op(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& host,
                    DType dt, Device dev, bool reference = false) {
  std::vector<Tensor> in;
  for (const Tensor& h : host) {
    if (is_floating(h.dtype())) {
      Tensor x = h.to(dt);
      if (reference) x = x.to(DType::F64);
      x = x.to(dev).clone();
      set_requires_grad(x);
      in.push_back(x);
    } else {
      in.push_back(h.to(dev));
    }
  }
  Tensor out = f(in);
  Generator g(4242);
  Tensor gout = Tensor::randn(out.shape(), g, 0.0, 1.0, DType::F32).to(dt);  // same rounded values in both runs
  backward(out, gout.to(out.dtype()).to(dev));
  OpRun r;
  r.out = out.to_vector();
  for (const Tensor& x : in) {
    if (!is_floating(x.dtype())) {
      r.grads.emplace_back();
      continue;
    }
    Tensor gx = grad(x);
    r.grads.push_back(gx.defined() ? gx.to_vector() : std::vector<double>(static_cast<size_t>(x.numel()), 0.0));
  }
  return r;
}

// CUDA in `dt` vs CPU f64 on the same rounded inputs. f32 / f64: elementwise |a-b| <= atol + rtol |b|;
// bf16 / f16: relative L2 error <= l2_tol.
inline void expect_cuda_matches_cpu(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                    const std::vector<Tensor>& host, DType dt, double atol, double rtol, double l2_tol,
                                    const std::string& what) {
  OpRun gpu = run_op(f, host, dt, Device::cuda());
  OpRun ref = run_op(f, host, dt, Device::cpu(), /*reference=*/true);
  auto cmp = [&](const std::vector<double>& a, const std::vector<double>& b, const std::string& name) {
    ASSERT_EQ(a.size(), b.size()) << what << " " << name;
    if (is_half(dt)) {
      EXPECT_LE(rel_l2(a, b), l2_tol) << what << " " << name << " (" << dtype_name(dt) << ")";
    } else {
      EXPECT_LE(tolerance_ratio(a, b, atol, rtol), 1.0) << what << " " << name << " (" << dtype_name(dt) << ")";
    }
  };
  cmp(gpu.out, ref.out, "forward");
  for (size_t i = 0; i < gpu.grads.size(); ++i)
    if (!gpu.grads[i].empty()) cmp(gpu.grads[i], ref.grads[i], "grad of input " + std::to_string(i));
}

}  // namespace mt::test
