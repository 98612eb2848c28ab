#include "nn/mamba.h"

#include <cmath>

#include "autograd/autograd.h"
#include "autograd/checkpoint.h"
#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/shape_ops.h"
#include "nn/init.h"

namespace mt::nn {

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
MixerReverse::MixerReverse(const MambaConfig& c)
    : conv1d(c.d_inner, c.d_conv, c.conv_bias),
      x_proj(c.d_inner, c.dt_rank + 2 * c.d_state, false),
      dt_proj(c.dt_rank, c.d_inner, true) {
  register_module("conv1d", conv1d);
  register_module("x_proj", x_proj);
  register_module("dt_proj", dt_proj);
  A_log = &register_parameter("A_log", Tensor::zeros({c.d_inner, c.d_state}));
  D = &register_parameter("D", Tensor::ones({c.d_inner}));
}

MambaMixer::MambaMixer(const MambaConfig& c)
    : in_proj(c.d_model, 2 * c.d_inner, c.proj_bias),
      conv1d(c.d_inner, c.d_conv, c.conv_bias),
      x_proj(c.d_inner, c.dt_rank + 2 * c.d_state, false),
      dt_proj(c.dt_rank, c.d_inner, true),
      out_proj(c.d_inner, c.d_model, c.proj_bias),
      cfg_(c) {
  register_module("in_proj", in_proj);
  register_module("conv1d", conv1d);
  register_module("x_proj", x_proj);
  register_module("dt_proj", dt_proj);
  A_log = &register_parameter("A_log", Tensor::zeros({c.d_inner, c.d_state}));
  D = &register_parameter("D", Tensor::ones({c.d_inner}));
  register_module("out_proj", out_proj);
  if (c.bidirectional && c.bidirectional_weights == BiWeights::Caduceus) {
    reverse = std::make_unique<MixerReverse>(c);
    register_module("reverse", *reverse);
  }
}

ScanDirection MambaMixer::scan_inputs(const CausalConv1d& conv, const Linear& xp, const Linear& dtp,
                                      const Tensor& A_log_p, const Tensor& D_p, const Tensor& x, const Tensor& reset,
                                      DType cd, LayerState* state, bool backwards) const {
  const int64_t n = cfg_.d_state, r = cfg_.dt_rank;
  const DType sd = state_dtype(cd);
  MT_CHECK(!(backwards && state), ErrorKind::Usage, "a bidirectional Mamba cannot be run step by step");
  ScanDirection s;
  s.u = conv.forward(x, cd, /*apply_silu=*/true, state ? &state->conv_state : nullptr, reset, backwards);
  Tensor xdbl = xp.forward(s.u, cd);
  // Views, no copies: dt_proj's GEMM reads dt with xdbl's row stride, and the scan reads B and C in place on CUDA.
  const std::vector<Tensor> parts = split(xdbl, -1, {r, n, n}, /*views=*/true);
  s.Bm = parts[1];
  s.Cm = parts[2];
  s.delta = linear(parts[0], as_compute(*dtp.weight, cd));  // the bias goes into the scan, in fp32
  s.A = neg(exp(as_compute(A_log_p, sd)));
  s.D_skip = as_compute(D_p, sd);
  s.delta_bias = as_compute(*dtp.bias, sd);
  return s;
}

Tensor MambaMixer::direction(const CausalConv1d& conv, const Linear& xp, const Linear& dtp, const Tensor& A_log_p,
                             const Tensor& D_p, const Tensor& x, const Tensor& z, const Tensor& mask,
                             const Tensor& reset, DType cd, LayerState* state, Tensor* last_state,
                             bool backwards) const {
  const ScanDirection s = scan_inputs(conv, xp, dtp, A_log_p, D_p, x, reset, cd, state, backwards);
  SelectiveScanOut scan =
      selective_scan(s.u, s.delta, s.A, s.Bm, s.Cm, s.D_skip, z, s.delta_bias, /*delta_softplus=*/true,
                     state ? state->ssm_state : Tensor(), mask, reset, backwards);
  if (state) state->ssm_state = scan.last_state;
  if (last_state) *last_state = scan.last_state;
  return scan.y;
}

namespace {

// The document starts of the sequence read backwards: a document that starts at t (reset[t]) ends at t - 1, and read
// backwards the step after t - 1 is at reversed position L - t. So rev[:, L - t] = reset[:, t] for t >= 1, and
// rev[:, 0] = 0.
Tensor reversed_resets(const Tensor& reset) {
  if (!reset.defined()) return Tensor();
  const int64_t B = reset.size(0), L = reset.size(1);
  if (L == 1) return Tensor::zeros({B, 1}, reset.dtype(), reset.device());
  return contiguous(
      concat({Tensor::zeros({B, 1}, reset.dtype(), reset.device()), slice(flip(reset, 1), 1, 0, L - 1)}, 1));
}

}  // namespace

Tensor MambaMixer::run(const Tensor& h, const Tensor& mask, const Tensor& reset, DType cd, LayerState* state,
                       Tensor* last_state, bool backwards) const {
  const int64_t di = cfg_.d_inner;
  // in_proj as one GEMM per half of its weight (rows [0, d_inner) give x, the rest z): x and z come out packed,
  // each half's weight gradient is written into its rows, and h's gradient is summed inside the GEMMs.
  const std::vector<Tensor> xz = linear_split(h, as_compute(*in_proj.weight, cd),
                                              in_proj.bias ? as_compute(*in_proj.bias, cd) : Tensor(), {di, di});
  Tensor x = xz[0];
  const Tensor& z = xz[1];
  if (mask.defined()) x = mul(x, unsqueeze(mask, -1));  // pads enter the conv as zeros
  if (!reverse)
    return out_proj.forward(
        direction(conv1d, x_proj, dt_proj, *A_log, *D, x, z, mask, reset, cd, state, last_state, backwards), cd);
  // Caduceus: the reverse direction reads the sequence backwards (in place: the conv and the scan walk it from the
  // end) with its own conv / x_proj / dt_proj / A_log / D and the shared in_proj; its output, already in the input's
  // order, is added to the forward direction's. out_proj is shared too: applied once to the sum when it has no bias.
  MT_CHECK(state == nullptr, ErrorKind::Usage, "a bidirectional Mamba cannot be run step by step");
  Tensor yf, yr;
  if (last_state) {  // the forward scan's final state is asked for: two one-direction scans
    yf = direction(conv1d, x_proj, dt_proj, *A_log, *D, x, z, mask, reset, cd, nullptr, last_state);
    yr = direction(reverse->conv1d, reverse->x_proj, reverse->dt_proj, *reverse->A_log, *reverse->D, x, z, mask, reset,
                   cd, nullptr, nullptr, /*backwards=*/true);
  } else {  // both scans in one two-direction op (one launch per pass on CUDA)
    const ScanDirection f = scan_inputs(conv1d, x_proj, dt_proj, *A_log, *D, x, reset, cd, nullptr, false);
    const ScanDirection b = scan_inputs(reverse->conv1d, reverse->x_proj, reverse->dt_proj, *reverse->A_log,
                                        *reverse->D, x, reset, cd, nullptr, /*backwards=*/true);
    const SelectiveScanBidirOut o = selective_scan_bidir(f, b, z, /*delta_softplus=*/true, mask, reset);
    yf = o.y_fwd;
    yr = o.y_rev;
  }
  if (out_proj.bias) return add(out_proj.forward(yf, cd), out_proj.forward(yr, cd));
  return out_proj.forward(add(yf, yr), cd);
}

Tensor MambaMixer::forward(const Tensor& h, const ForwardOptions& opt, LayerState* state, Tensor* last_state) const {
  const DType cd = opt.compute_dtype;
  Tensor mask = opt.mask.defined() ? opt.mask.to(cd) : Tensor();
  Tensor out = run(h, mask, opt.reset, cd, state, last_state);
  if (cfg_.bidirectional && !reverse) {
    MT_CHECK(state == nullptr, ErrorKind::Usage, "a bidirectional Mamba cannot be run step by step");
    // Shared weights (the first bidirectional variant): the same mixer scans the sequence backwards; outputs added.
    out = add(out, run(h, mask, opt.reset, cd, nullptr, nullptr, /*backwards=*/true));
  }
  return out;
}

// ---------------------------------------------------------------- MambaBlock
MambaBlock::MambaBlock(const MambaConfig& c)
    : norm(c.d_model, c.norm == NormKind::LayerNorm, c.norm_eps), mixer(c), cfg_(c) {
  register_module("norm", norm);
  register_module("mixer", mixer);
}

std::pair<Tensor, Tensor> MambaBlock::forward(const Tensor& h, const Tensor& residual, const ForwardOptions& opt,
                                              LayerState* state, Tensor* last_state) const {
  NormOut n = norm.forward(h, residual, opt.compute_dtype);
  // residual_in_fp32 false: the residual stream is held in the compute dtype, as HF does without it; the fused add
  // still runs in f32, and its result is rounded to the compute dtype (a no-op in f32 / f64).
  if (!cfg_.residual_in_fp32 && is_half(opt.compute_dtype))
    n.residual = cast(cast(n.residual, opt.compute_dtype), n.residual.dtype());
  Tensor y = mixer.forward(n.y, opt, state, last_state);
  if (opt.dropout_gen && opt.dropout > 0) y = dropout(y, opt.dropout, true, *opt.dropout_gen);
  return {y, n.residual};
}

// ---------------------------------------------------------------- MambaBackbone
MambaBackbone::MambaBackbone(const MambaConfig& c)
    : embeddings(c.vocab_size, c.d_model), norm_f(c.d_model, c.norm == NormKind::LayerNorm, c.norm_eps), cfg_(c) {
  register_module("embeddings", embeddings);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    layers.push_back(std::make_unique<MambaBlock>(c));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module("norm_f", norm_f);
}

BackboneOutput MambaBackbone::forward(const Tensor& ids, const ForwardOptions& opt) const {
  if (!cfg_.rc_equivariant) return forward_strand(ids, opt);
  MT_CHECK_SHAPE(ids.dim() == 2, "Mamba forward: ids must be [batch, length], got ", ids.describe());
  MT_CHECK(opt.cache == nullptr, ErrorKind::Usage, "a reverse-complement-equivariant Mamba cannot be run step by step");
  // Both strands as one batch of 2B: the sequence, and its reverse complement (with its mask reversed).
  const int64_t B = ids.size(0);
  std::vector<int64_t> v = ids.to(Device::cpu()).to_vector_i64();
  for (int64_t& id : v)
    if (id >= 0 && id < static_cast<int64_t>(cfg_.rc_complement.size())) id = cfg_.rc_complement[id];
  const Tensor rc_ids = flip(Tensor::from_vector_i64(v, ids.shape()).to(ids.device()), 1);
  ForwardOptions both = opt;
  if (opt.mask.defined()) both.mask = concat({opt.mask, flip(opt.mask, 1)}, 0);
  if (opt.reset.defined()) both.reset = contiguous(concat({opt.reset, reversed_resets(opt.reset)}, 0));
  both.output_hidden_states = false;
  const BackboneOutput o = forward_strand(concat({ids, rc_ids}, 0), both);
  const int64_t total = o.last_hidden_state.size(0);
  const Tensor fwd = slice(o.last_hidden_state, 0, 0, B);
  const Tensor rc = flip(slice(o.last_hidden_state, 0, B, total), 1);  // aligned with the positions of ids
  BackboneOutput out;
  out.last_hidden_state = concat({fwd, flip(rc, 2)}, 2);
  return out;
}

BackboneOutput MambaBackbone::forward_strand(const Tensor& ids, const ForwardOptions& opt) const {
  MT_CHECK_SHAPE(ids.dim() == 2, "Mamba forward: ids must be [batch, length], got ", ids.describe());
  if (opt.mask.defined())
    MT_CHECK_SHAPE(opt.mask.shape() == ids.shape(), "Mamba forward: mask ", shape_str(opt.mask.shape()),
                   " does not match ids ", shape_str(ids.shape()));
  if (opt.reset.defined())
    MT_CHECK_SHAPE(opt.reset.shape() == ids.shape() && opt.reset.dtype() == DType::I32, "Mamba forward: reset ",
                   opt.reset.describe(), " must be i32 of the ids' shape ", shape_str(ids.shape()));
  if (opt.cache)
    MT_CHECK_SHAPE(static_cast<int64_t>(opt.cache->layers.size()) == cfg_.n_layer, "inference cache has ",
                   opt.cache->layers.size(), " layers, model has ", cfg_.n_layer);
  const DType cd = opt.compute_dtype;
  BackboneOutput out;
  Tensor h = embeddings.forward(ids, cd);
  if (opt.output_hidden_states) out.hidden_states.push_back(h);
  Tensor residual;
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerState* st = opt.cache ? &opt.cache->layers[i] : nullptr;
    Tensor* last = (i + 1 == layers.size()) ? &out.last_ssm_state : nullptr;
    if (opt.checkpoint_blocks && grad_enabled()) {
      // The block as a function of (h, residual, conv state, SSM state) -> (h, residual, states, last SSM state).
      const MambaBlock& block = *layers[i];
      const bool want_last = last != nullptr;
      // A block's dropout mask comes from a generator of its own, started where the shared one reserves the block's
      // draw (the same offset as without checkpointing), so that the recomputation in the backward draws it again.
      ForwardOptions bopt = opt;
      bopt.dropout_gen = nullptr;
      const bool drop = opt.dropout_gen && opt.dropout > 0;
      const GeneratorState ds =
          drop ? GeneratorState{opt.dropout_gen->seed(), opt.dropout_gen->reserve(static_cast<uint64_t>(h.numel()))}
               : GeneratorState{};
      auto fn = [&block, bopt, drop, ds, want_last](const std::vector<Tensor>& in) {
        LayerState s{in[2], in[3]};
        Tensor last_state;
        ForwardOptions bo = bopt;
        Generator g;
        if (drop) {
          g.set_state(ds);
          bo.dropout_gen = &g;
        }
        auto r = block.forward(in[0], in[1], bo, in[2].defined() ? &s : nullptr, want_last ? &last_state : nullptr);
        std::vector<Tensor> o = {r.first, r.second};
        if (in[2].defined()) {
          o.push_back(s.conv_state);
          o.push_back(s.ssm_state);
        }
        if (want_last) o.push_back(last_state);
        return o;
      };
      const std::vector<Tensor> o = checkpoint(
          fn, {h, residual, st ? st->conv_state : Tensor(), st ? st->ssm_state : Tensor()}, block.parameters());
      h = o[0];
      residual = o[1];
      size_t k = 2;
      if (st) {
        st->conv_state = o[k++];
        st->ssm_state = o[k++];
      }
      if (want_last) *last = o[k];
    } else {
      auto hr = layers[i]->forward(h, residual, opt, st, last);
      h = hr.first;
      residual = hr.second;
    }
    if (opt.output_hidden_states) out.hidden_states.push_back(add(residual, cast(h, residual.dtype())));
  }
  NormOut f = norm_f.forward(h, residual, cd);
  out.last_hidden_state = f.y;
  if (opt.output_hidden_states) out.hidden_states.push_back(f.y);
  if (opt.cache) opt.cache->position += ids.size(1);
  return out;
}

}  // namespace mt::nn
