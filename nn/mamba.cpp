#include "nn/mamba.h"

#include <cmath>

#include "autograd/autograd.h"
#include "autograd/ops/conv1d.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/nn_ops.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/shape_ops.h"
#include "nn/init.h"

namespace mt::nn {

Tensor as_compute(const Tensor& param, DType cd) { return param.dtype() == cd ? param : cast(param, cd); }
DType state_dtype(DType cd) { return cd == DType::F64 ? DType::F64 : DType::F32; }

InferenceCache make_cache(const MambaConfig& cfg, int64_t batch, DType cd, Device dev) {
  InferenceCache c;
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    LayerState s;
    s.conv_state = Tensor::zeros({batch, cfg.d_conv - 1, cfg.d_inner}, cd, dev);
    s.ssm_state = Tensor::zeros({batch, cfg.d_inner, cfg.d_state}, state_dtype(cd), dev);
    c.layers.push_back(s);
  }
  return c;
}

// ---------------------------------------------------------------- MambaMixer
MambaMixer::MambaMixer(const MambaConfig& c) : cfg_(c) {
  const int64_t d = c.d_model, di = c.d_inner, n = c.d_state, r = c.dt_rank, k = c.d_conv;
  in_proj_w = &register_parameter("in_proj.weight", Tensor::zeros({2 * di, d}));
  if (c.proj_bias) in_proj_b = &register_parameter("in_proj.bias", Tensor::zeros({2 * di}));
  conv_w = &register_parameter("conv1d.weight", Tensor::zeros({di, 1, k}));
  if (c.conv_bias) conv_b = &register_parameter("conv1d.bias", Tensor::zeros({di}));
  x_proj_w = &register_parameter("x_proj.weight", Tensor::zeros({r + 2 * n, di}));
  dt_proj_w = &register_parameter("dt_proj.weight", Tensor::zeros({di, r}));
  dt_proj_b = &register_parameter("dt_proj.bias", Tensor::zeros({di}));
  A_log = &register_parameter("A_log", Tensor::zeros({di, n}));
  D = &register_parameter("D", Tensor::ones({di}));
  out_proj_w = &register_parameter("out_proj.weight", Tensor::zeros({d, di}));
  if (c.proj_bias) out_proj_b = &register_parameter("out_proj.bias", Tensor::zeros({d}));
}

Tensor MambaMixer::run(const Tensor& h, const Tensor& mask, DType cd, LayerState* state, Tensor* last_state) const {
  const int64_t di = cfg_.d_inner, n = cfg_.d_state, r = cfg_.dt_rank, k = cfg_.d_conv;
  const DType sd = state_dtype(cd);
  Tensor xz = linear(h, as_compute(*in_proj_w, cd), in_proj_b ? as_compute(*in_proj_b, cd) : Tensor());
  Tensor x = contiguous(slice(xz, -1, 0, di));
  Tensor z = contiguous(slice(xz, -1, di, 2 * di));
  if (mask.defined()) x = mul(x, unsqueeze(mask, -1));  // pads enter the conv as zeros
  CausalConv1dOut conv = causal_conv1d(x, reshape(as_compute(*conv_w, cd), {di, k}),
                                       conv_b ? as_compute(*conv_b, cd) : Tensor(),
                                       state ? state->conv_state : Tensor(), /*apply_silu=*/true);
  Tensor xdbl = linear(conv.y, as_compute(*x_proj_w, cd));
  Tensor dt = contiguous(slice(xdbl, -1, 0, r));
  Tensor Bm = contiguous(slice(xdbl, -1, r, r + n));
  Tensor Cm = contiguous(slice(xdbl, -1, r + n, r + 2 * n));
  Tensor delta = linear(dt, as_compute(*dt_proj_w, cd));
  Tensor A = neg(exp(as_compute(*A_log, sd)));
  SelectiveScanOut scan = selective_scan(conv.y, delta, A, Bm, Cm, as_compute(*D, sd), z, as_compute(*dt_proj_b, sd),
                                         /*delta_softplus=*/true, state ? state->ssm_state : Tensor(), mask);
  if (state) {
    state->conv_state = conv.final_state;
    state->ssm_state = scan.last_state;
  }
  if (last_state) *last_state = scan.last_state;
  return linear(scan.y, as_compute(*out_proj_w, cd), out_proj_b ? as_compute(*out_proj_b, cd) : Tensor());
}

Tensor MambaMixer::forward(const Tensor& h, const ForwardOptions& opt, LayerState* state, Tensor* last_state) const {
  const DType cd = opt.compute_dtype;
  Tensor mask = opt.mask.defined() ? opt.mask.to(cd) : Tensor();
  Tensor out = run(h, mask, cd, state, last_state);
  if (cfg_.bidirectional) {
    MT_CHECK(state == nullptr, ErrorKind::Usage, "a bidirectional Mamba cannot be run step by step");
    // Caduceus-style: the same projections scan the reversed sequence; the two outputs are added.
    Tensor rev = run(flip(h, 1), mask.defined() ? flip(mask, 1) : Tensor(), cd, nullptr, nullptr);
    out = add(out, flip(rev, 1));
  }
  return out;
}

// ---------------------------------------------------------------- MambaBlock
MambaBlock::MambaBlock(const MambaConfig& c) : mixer(c), cfg_(c) {
  norm_w = &register_parameter("norm.weight", Tensor::ones({c.d_model}));
  if (c.norm == "layernorm") norm_b = &register_parameter("norm.bias", Tensor::zeros({c.d_model}));
  register_module("mixer", mixer);
}

std::pair<Tensor, Tensor> MambaBlock::forward(const Tensor& h, const Tensor& residual, const ForwardOptions& opt,
                                              LayerState* state, Tensor* last_state) const {
  const DType cd = opt.compute_dtype, sd = state_dtype(cd);
  NormOut n = norm_b ? layer_norm_residual(h, residual, as_compute(*norm_w, sd), as_compute(*norm_b, sd),
                                           cfg_.norm_eps, cd)
                     : rms_norm_residual(h, residual, as_compute(*norm_w, sd), cfg_.norm_eps, cd);
  return {mixer.forward(n.y, opt, state, last_state), n.residual};
}

// ---------------------------------------------------------------- MambaBackbone
MambaBackbone::MambaBackbone(const MambaConfig& c) : cfg_(c) {
  embeddings = &register_parameter("embeddings.weight", Tensor::zeros({c.vocab_size, c.d_model}));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    layers.push_back(std::make_unique<MambaBlock>(c));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  norm_f_w = &register_parameter("norm_f.weight", Tensor::ones({c.d_model}));
  if (c.norm == "layernorm") norm_f_b = &register_parameter("norm_f.bias", Tensor::zeros({c.d_model}));
}

BackboneOutput MambaBackbone::forward(const Tensor& ids, const ForwardOptions& opt) const {
  MT_CHECK_SHAPE(ids.dim() == 2, "Mamba forward: ids must be [batch, length], got ", ids.describe());
  if (opt.mask.defined())
    MT_CHECK_SHAPE(opt.mask.shape() == ids.shape(), "Mamba forward: mask ", shape_str(opt.mask.shape()),
                   " does not match ids ", shape_str(ids.shape()));
  if (opt.cache)
    MT_CHECK_SHAPE(static_cast<int64_t>(opt.cache->layers.size()) == cfg_.n_layer, "inference cache has ",
                   opt.cache->layers.size(), " layers, model has ", cfg_.n_layer);
  const DType cd = opt.compute_dtype, sd = state_dtype(cd);
  BackboneOutput out;
  Tensor h = embedding(as_compute(*embeddings, cd), ids);
  if (opt.output_hidden_states) out.hidden_states.push_back(h);
  Tensor residual;
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerState* st = opt.cache ? &opt.cache->layers[i] : nullptr;
    Tensor* last = (i + 1 == layers.size()) ? &out.last_ssm_state : nullptr;
    auto hr = layers[i]->forward(h, residual, opt, st, last);
    h = hr.first;
    residual = hr.second;
    if (opt.output_hidden_states) out.hidden_states.push_back(add(residual, cast(h, residual.dtype())));
  }
  NormOut f = norm_f_b ? layer_norm_residual(h, residual, as_compute(*norm_f_w, sd), as_compute(*norm_f_b, sd),
                                             cfg_.norm_eps, cd)
                       : rms_norm_residual(h, residual, as_compute(*norm_f_w, sd), cfg_.norm_eps, cd);
  out.last_hidden_state = f.y;
  if (opt.output_hidden_states) out.hidden_states.push_back(f.y);
  if (opt.cache) opt.cache->position += ids.size(1);
  return out;
}

}  // namespace mt::nn
