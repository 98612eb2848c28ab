#include "autograd/checkpoint.h"

#include <memory>

#include "autograd/autograd.h"

namespace mt {

namespace {

// Swaps the thread's tape with an empty one for a scope, and back.
class OwnTape {
 public:
  OwnTape() { current_tape().swap(mine_); }
  ~OwnTape() { current_tape().swap(mine_); }

 private:
  Tape mine_;
};

// Gives parameters fresh leaf autograd state for a scope (so an inner backward's gradients land there, not in the
// parameters' own gradients and hooks), and puts the originals back.
class StandIns {
 public:
  explicit StandIns(const std::vector<Tensor*>& params) : params_(params) {
    for (Tensor* p : params_) {
      saved_.push_back(p->impl().autograd);
      p->impl().autograd.reset();
      set_requires_grad(*p);
    }
  }
  ~StandIns() {
    for (size_t i = 0; i < params_.size(); ++i) params_[i]->impl().autograd = saved_[i];
  }
  std::vector<Tensor> grads() const {
    std::vector<Tensor> g;
    for (Tensor* p : params_) g.push_back(grad(*p));
    return g;
  }

 private:
  std::vector<Tensor*> params_;
  std::vector<std::shared_ptr<AutogradMeta>> saved_;
};

}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor*>& params) {
  std::vector<Tensor> all = inputs;
  for (Tensor* p : params) all.push_back(*p);
  if (!any_requires_grad(all)) return fn(inputs);
  std::vector<Tensor> outs;
  {
    NoGradGuard ng;
    outs = fn(inputs);
  }
  for (const Tensor& o : outs)
    MT_CHECK_SHAPE(o.defined() && is_floating(o.dtype()), "checkpoint: every output must be a defined float tensor");
  // fn may return one tensor twice (a block's last SSM state is also its new state): record it once.
  std::vector<size_t> slot(outs.size());
  std::vector<Tensor> unique;
  for (size_t k = 0; k < outs.size(); ++k) {
    size_t u = 0;
    while (u < unique.size() && !unique[u].same(outs[k])) ++u;
    if (u == unique.size()) unique.push_back(outs[k]);
    slot[k] = u;
  }
  std::vector<Tensor> saved;
  std::vector<bool> wants;
  for (const Tensor& t : inputs) {
    saved.push_back(t.defined() ? t.detach() : Tensor());
    wants.push_back(requires_grad(t));
  }
  const size_t n_in = inputs.size();
  auto node = make_lambda_node("checkpoint", [fn, saved, wants, params, n_in, slot](const std::vector<Tensor>& g) {
    OwnTape tape;
    StandIns stand_ins(params);
    EnableGradGuard eg;
    std::vector<Tensor> in = saved;
    for (size_t i = 0; i < in.size(); ++i) {
      if (!in[i].defined()) continue;
      in[i] = in[i].detach();
      if (wants[i]) set_requires_grad(in[i]);
    }
    const std::vector<Tensor> re = fn(in);
    MT_ASSERT(re.size() == slot.size(), "checkpoint: the recompute gave ", re.size(), " outputs, the forward ",
              slot.size());
    std::vector<Tensor> roots, seeds;
    std::vector<bool> seeded(g.size(), false);
    for (size_t k = 0; k < re.size(); ++k) {
      if (seeded[slot[k]] || !requires_grad(re[k])) continue;
      seeded[slot[k]] = true;
      roots.push_back(re[k]);
      seeds.push_back(g[slot[k]].to(re[k].dtype()));
    }
    std::vector<Tensor> grads(n_in + params.size());
    if (!roots.empty()) {
      current_tape().backward(roots, seeds);
      for (size_t i = 0; i < n_in; ++i)
        if (wants[i]) grads[i] = grad(in[i]);
      const std::vector<Tensor> pg = stand_ins.grads();
      for (size_t j = 0; j < pg.size(); ++j) grads[n_in + j] = pg[j];
    }
    return grads;
  });
  record_node(node, all, unique);
  for (size_t k = 0; k < outs.size(); ++k) outs[k] = unique[slot[k]];
  return outs;
}

}  // namespace mt
