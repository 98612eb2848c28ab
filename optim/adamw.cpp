#include "optim/adamw.h"

#include <cmath>
#include <map>

#include "autograd/autograd.h"
#include "autograd/ops/dispatch.h"
#include "optim/grad_check.h"

namespace mt::optim {

bool default_decay(const std::string& name, const Tensor& param) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with("A_log") || ends_with(".D") || name == "D" || ends_with(".bias")) return false;
  if (name.find("norm") != std::string::npos) return false;  // norm.weight, norm_f.weight
  return param.dim() >= 2;
}

AdamW::AdamW(const std::vector<std::pair<std::string, Tensor*>>& params, const AdamWOptions& opt) : opt_(opt) {
  for (auto& np : params) {
    MT_CHECK_SHAPE(np.second->dtype() == DType::F32 || np.second->dtype() == DType::F64, "AdamW: parameter ", np.first,
                   " must be an f32 master (got ", np.second->describe(), ")");
    ParamEntry e;
    e.name = np.first;
    e.param = np.second;
    e.decay = default_decay(np.first, *np.second);
    e.exp_avg = Tensor::zeros(np.second->shape(), DType::F32, np.second->device());
    e.exp_avg_sq = Tensor::zeros(np.second->shape(), DType::F32, np.second->device());
    entries_.push_back(std::move(e));
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
  kernels::AdamWParams common;
  common.lr = static_cast<float>(lr);
  common.beta1 = static_cast<float>(opt_.beta1);
  common.beta2 = static_cast<float>(opt_.beta2);
  common.eps = static_cast<float>(opt_.eps);
  common.bias_correction1 = static_cast<float>(bc1);
  common.bias_correction2 = static_cast<float>(bc2);
  common.grad_scale = static_cast<float>(grad_scale);
  std::map<double, std::vector<kernels::AdamWTensor>> on_gpu;  // by lr_scale, updated together: few launches
  std::vector<Tensor> keep;                                    // contiguous gradient copies, alive until their launch
  std::vector<TensorImpl*> refreshed;                          // parameters whose weight copy this step rewrites
  for (auto& e : entries_) {
    Tensor g = grad(*e.param);
    if (!g.defined()) continue;
    MT_CHECK_SHAPE(e.param->dtype() == DType::F32, "AdamW: parameter ", e.name, " must be f32, is ",
                   e.param->describe());
    g = g.contiguous();
    const float wd = e.decay ? static_cast<float>(opt_.weight_decay) : 0.0f;
    float* param = e.param->data<float>();
    // The bf16 / f16 copy cached_cast keeps with the parameter (nn::as_compute): rewritten from the new master in
    // the same pass, so the next forward reuses it instead of casting. A stale copy is rewritten too: the update
    // runs after every earlier write to the master in stream order, so its result is the fresh value.
    TensorImpl& im = e.param->impl();
    void* copy = nullptr;
    DType copy_dtype = DType::BF16;
    if (im.converted && is_half(im.converted->dtype) && im.converted->shape == im.shape && e.param->is_contiguous() &&
        im.converted->storage->device() == e.param->device()) {
      copy = Tensor(im.converted).data_ptr();
      copy_dtype = im.converted->dtype;
      refreshed.push_back(&im);
    }
    if (e.param->is_cuda()) {
      on_gpu[e.lr_scale].push_back({param, g.data_ptr(), g.dtype(), e.exp_avg.data<float>(), e.exp_avg_sq.data<float>(),
                                    copy, copy_dtype, e.param->numel(), wd});
      keep.push_back(g);
      continue;
    }
    kernels::AdamWParams p = common;
    p.lr = static_cast<float>(lr * e.lr_scale);
    p.param = param;
    p.copy = copy;
    p.copy_dtype = copy_dtype;
    p.grad = g.data_ptr();
    p.grad_dtype = g.dtype();
    p.exp_avg = e.exp_avg.data<float>();
    p.exp_avg_sq = e.exp_avg_sq.data<float>();
    p.n = e.param->numel();
    p.weight_decay = wd;
    const OpTimeScope timed("adamw", /*cuda=*/false);
    kernels::adamw_cpu(p);
  }
  for (auto& group : on_gpu) {
    common.lr = static_cast<float>(lr * group.first);
    ops::run_cuda("adamw", MT_CUDA_KERNEL(adamw_multi_cuda), common, group.second);
  }
  // Taken after every data() call above (a parameter's storage may hold several parameters): the copies are fresh
  // until the next access to their masters.
  for (TensorImpl* im : refreshed) im->converted_version = im->storage->version();
}

double global_grad_norm(const std::vector<Tensor*>& params) { return grad_global_norm(params); }

}  // namespace mt::optim
