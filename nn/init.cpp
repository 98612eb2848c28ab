#include "nn/init.h"

#include <cmath>

#include "autograd/tape.h"
#include "nn/mamba.h"

namespace mt::nn {

void init_uniform(Tensor& t, Generator& gen, double lo, double hi) {
  NoGradGuard ng;
  t.copy_(Tensor::rand(t.shape(), gen, lo, hi, DType::F64));
}

void init_normal(Tensor& t, Generator& gen, double mean, double std) {
  NoGradGuard ng;
  t.copy_(Tensor::randn(t.shape(), gen, mean, std, DType::F64));
}

void init_dt_bias(Tensor& bias, Generator& gen, const MambaConfig& cfg) {
  Tensor u = Tensor::rand(bias.shape(), gen, 0.0, 1.0, DType::F64);
  std::vector<double> v = u.to_vector();
  const double lmin = std::log(cfg.dt_min), lmax = std::log(cfg.dt_max);
  for (double& x : v) {
    double dt = std::exp(x * (lmax - lmin) + lmin);
    dt = std::max(dt, cfg.dt_init_floor);
    x = dt + std::log(-std::expm1(-dt));  // inverse of softplus
  }
  NoGradGuard ng;
  bias.copy_(Tensor::from_vector(v, bias.shape(), DType::F64));
}

void init_A_log(Tensor& A_log) {
  const int64_t di = A_log.size(0), n = A_log.size(1);
  std::vector<double> v(static_cast<size_t>(di * n));
  for (int64_t d = 0; d < di; ++d)
    for (int64_t j = 0; j < n; ++j) v[d * n + j] = std::log(static_cast<double>(j + 1));
  NoGradGuard ng;
  A_log.copy_(Tensor::from_vector(v, A_log.shape(), DType::F64));
}

void MambaMixer::init_parameters(Generator& gen, int64_t n_layer) {
  const MambaConfig& c = cfg_;
  auto fan_in_uniform = [&](Tensor& w, int64_t fan_in) {
    const double b = 1.0 / std::sqrt(static_cast<double>(fan_in));
    init_uniform(w, gen, -b, b);
  };
  fan_in_uniform(*in_proj.weight, c.d_model);
  if (in_proj.bias) in_proj.bias->zero_();
  fan_in_uniform(*conv1d.weight, c.d_conv);  // depthwise: fan_in = (in_channels / groups) * kernel = d_conv
  if (conv1d.bias) fan_in_uniform(*conv1d.bias, c.d_conv);
  fan_in_uniform(*x_proj.weight, c.d_inner);
  const double dt_std = std::pow(static_cast<double>(c.dt_rank), -0.5) * c.dt_scale;
  if (c.dt_init == DtInit::Constant) {
    dt_proj.weight->fill_(dt_std);
  } else {
    init_uniform(*dt_proj.weight, gen, -dt_std, dt_std);
  }
  init_dt_bias(*dt_proj.bias, gen, c);
  init_A_log(*A_log);
  D->fill_(1.0);
  if (reverse) {  // the reverse direction of a Caduceus layer: initialised as the forward one, from the next draws
    fan_in_uniform(*reverse->conv1d.weight, c.d_conv);
    if (reverse->conv1d.bias) fan_in_uniform(*reverse->conv1d.bias, c.d_conv);
    fan_in_uniform(*reverse->x_proj.weight, c.d_inner);
    if (c.dt_init == DtInit::Constant) {
      reverse->dt_proj.weight->fill_(dt_std);
    } else {
      init_uniform(*reverse->dt_proj.weight, gen, -dt_std, dt_std);
    }
    init_dt_bias(*reverse->dt_proj.bias, gen, c);
    init_A_log(*reverse->A_log);
    reverse->D->fill_(1.0);
  }
  // out_proj: U(+-1/sqrt(fan_in)), then scaled by 1/sqrt(n_layer) (state-spaces' rescale_prenorm_residual).
  const double b = 1.0 / std::sqrt(static_cast<double>(c.d_inner)) / std::sqrt(static_cast<double>(n_layer));
  init_uniform(*out_proj.weight, gen, -b, b);
  if (out_proj.bias) out_proj.bias->zero_();
}

void MambaBackbone::init_parameters(Generator& gen) {
  init_normal(*embeddings.weight, gen, 0.0, cfg_.initializer_range);
  for (auto& layer : layers) {
    layer->norm.weight->fill_(1.0);
    if (layer->norm.bias) layer->norm.bias->zero_();
    layer->mixer.init_parameters(gen, cfg_.n_layer);
  }
  norm_f.weight->fill_(1.0);
  if (norm_f.bias) norm_f.bias->zero_();
}

std::string check_init_invariants(const MambaBackbone& model, bool after_training) {
  const MambaConfig& c = model.config();
  for (size_t i = 0; i < model.layers.size(); ++i) {
    const MambaMixer& m = model.layers[i]->mixer;
    struct Dir {
      const char* prefix;
      const Tensor *bias, *A_log, *D;
    };
    std::vector<Dir> dirs = {{"", m.dt_proj.bias, m.A_log, m.D}};
    if (m.reverse) dirs.push_back({"reverse.", m.reverse->dt_proj.bias, m.reverse->A_log, m.reverse->D});
    for (const Dir& dir : dirs) {
      std::vector<double> b = dir.bias->to_vector();
      for (size_t j = 0; j < b.size(); ++j) {
        const double sp = b[j] > 20 ? b[j] : std::log1p(std::exp(b[j]));
        const double lo = std::min(c.dt_min, c.dt_init_floor);
        if (!std::isfinite(sp) || (!after_training && (sp < lo * (1 - 1e-5) || sp > c.dt_max * (1 + 1e-5))))
          return str("layer ", i, ": softplus(", dir.prefix, "dt_proj.bias[", j, "]) = ", sp, " outside [", lo, ", ",
                     c.dt_max, "]");
      }
      for (double a : dir.A_log->to_vector())
        if (!std::isfinite(a)) return str("layer ", i, ": ", dir.prefix, "A_log is not finite");
      for (double d : dir.D->to_vector())
        if (!std::isfinite(d)) return str("layer ", i, ": ", dir.prefix, "D is not finite");
    }
  }
  return "";
}

}  // namespace mt::nn
