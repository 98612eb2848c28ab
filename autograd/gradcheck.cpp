#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/autograd.h"

namespace mt {

namespace {
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                          const GradcheckOptions& opt) {
  GradcheckResult res;
  bool any_marked = false;
  for (auto& t : inputs) any_marked = any_marked || requires_grad(t);
  std::vector<bool> check(inputs.size(), false);
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& t = inputs[i];
    if (!is_floating(t.dtype())) continue;
    MT_CHECK_SHAPE(t.dtype() == DType::F64 && t.device().is_cpu(), "gradcheck input ", i,
                   " must be a CPU f64 tensor, got ", t.describe());
    if (any_marked && !requires_grad(t)) continue;
    t = t.contiguous().clone();  // private, contiguous storage we can perturb
    set_requires_grad(t, true);
    check[i] = true;
  }

  Tensor out = f(inputs);
  Generator gen(opt.seed);
  Tensor w = Tensor::rand(out.shape(), gen, -1.0, 1.0, DType::F64);
  const std::vector<double> wv = w.to_vector();
  if (requires_grad(out)) {
    backward(out, w.to(out.dtype()));
  } else {
    current_tape().clear();
  }

  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!check[i]) continue;
    Tensor& x = inputs[i];
    Tensor g = grad(x);
    std::vector<double> analytic = g.defined() ? g.to(DType::F64).to_vector() : std::vector<double>(x.numel(), 0.0);
    double* p = x.data<double>();
    for (int64_t e = 0; e < x.numel(); ++e) {
      const double orig = p[e];
      p[e] = orig + opt.eps;
      const double lp = dot(f(inputs).to(DType::F64).to_vector(), wv);
      p[e] = orig - opt.eps;
      const double lm = dot(f(inputs).to(DType::F64).to_vector(), wv);
      p[e] = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double err = std::fabs(analytic[e] - numeric);
      if (!(err <= res.max_abs_err)) res.max_abs_err = std::isnan(err) ? INFINITY : err;
      if (res.ok && !(err <= opt.atol + opt.rtol * std::fabs(numeric))) {
        res.ok = false;
        res.message = str("input ", i, " ", x.describe(), " element ", e, ": analytic ", analytic[e], " numeric ",
                          numeric, " (|diff| ", err, ")");
      }
    }
  }
  return res;
}

}  // namespace mt
