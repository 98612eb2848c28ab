#include "autograd/tape.h"

#include <unordered_map>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"

namespace mt {

namespace {
thread_local Tape t_tape;
thread_local bool t_grad_enabled = true;

// Sum g into acc. Never writes into g or acc in place (either may alias another tensor's gradient). Where a 16-bit
// tensor's gradients arrive in f32 and in its own dtype (AutogradMeta::grad_may_be_f32), the sum is in f32.
void accumulate(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g;
  } else if (acc.dtype() != g.dtype()) {
    const DType wide = acc.dtype() == DType::F32 || g.dtype() == DType::F32 ? DType::F32 : acc.dtype();
    acc = add(acc.to(wide), g.to(wide));
  } else {
    acc = add(acc, g);
  }
}

// g is referenced only here, owns all of its storage alone and carries no autograd state: no other tensor can see a
// write to it.
bool owned_alone(const Tensor& g) {
  return g.impl_ptr().use_count() == 1 && g.storage() && g.storage().use_count() == 1 && g.offset() == 0 &&
         g.is_contiguous() && g.storage()->bytes() == g.nbytes() && !g.impl().autograd;
}

void check_grad(const Node& node, size_t j, const Tensor& g, const AutogradMeta& in) {
  MT_ASSERT(g.dim() >= 0, "");
  if (in.grad.defined())
    MT_CHECK_SHAPE(in.grad.shape() == g.shape(), "backward of ", node.name(), ": gradient for input ", j, " is ",
                   shape_str(g.shape()), " but earlier gradients are ", shape_str(in.grad.shape()));
}
}  // namespace

Tape& current_tape() { return t_tape; }
bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = prev_; }

void Tape::backward(const Tensor& root, const Tensor& seed) { backward(std::vector<Tensor>{root}, {seed}); }

void Tape::backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds) {
  MT_ASSERT(roots.size() == seeds.size() && !roots.empty(), "backward: ", roots.size(), " roots and ", seeds.size(),
            " seeds");
  NoGradGuard no_grad;
  bool any_node = false;
  for (size_t r = 0; r < roots.size(); ++r) {
    const Tensor& root = roots[r];
    auto meta = root.impl().autograd;
    MT_CHECK_SHAPE(meta && meta->requires_grad, "backward on a tensor that does not require grad (", root.describe(),
                   ")");
    Tensor g0 = seeds[r].defined() ? seeds[r] : Tensor::ones(root.shape(), root.dtype(), root.device());
    MT_CHECK_SHAPE(g0.shape() == root.shape(), "backward: gradient ", shape_str(g0.shape()), " for output ",
                   shape_str(root.shape()));
    if (meta->is_leaf) {
      accumulate(meta->grad, g0.clone());
      for (auto& h : meta->grad_ready_hooks) h(meta->grad);
      continue;
    }
    MT_CHECK_SHAPE(!meta->grad_fn.expired() && !nodes_.empty(),
                   "backward: the graph of this tensor is gone (backward already ran, or the tape was cleared)");
    accumulate(meta->grad, g0);
    any_node = true;
  }
  if (!any_node) {
    nodes_.clear();
    return;
  }

  // How many recorded uses each leaf has: its gradient is final when the earliest of them has run.
  std::unordered_map<AutogradMeta*, int> pending;
  for (auto& n : nodes_)
    for (auto& in : n->inputs)
      if (in && in->is_leaf) ++pending[in.get()];

  // Gradients of intermediate tensors live in their AutogradMeta, which only the consumer nodes own once the
  // tensor itself is gone (a temporary such as exp(x) in exp(exp(x))). Hold every meta that received a gradient
  // until its producer ran, or the consumer's destruction would drop the gradient on the floor.
  std::vector<std::shared_ptr<AutogradMeta>> holding;

  for (size_t i = nodes_.size(); i-- > 0;) {
    std::shared_ptr<Node> node = std::move(nodes_[i]);
    std::vector<Tensor> gout(node->outputs.size());
    bool any = false;
    for (size_t k = 0; k < node->outputs.size(); ++k) {
      if (auto m = node->outputs[k].lock()) {
        if (m->grad.defined()) {
          gout[k] = std::move(m->grad);
          m->grad = Tensor();  // a non-leaf's gradient is dead once its producer consumed it
          any = true;
        }
      }
    }
    if (any) {
      for (size_t k = 0; k < gout.size(); ++k)
        if (!gout[k].defined() && node->zero_fill_missing)
          gout[k] = Tensor::zeros(node->output_shapes[k], node->output_dtypes[k], node->output_devices[k]);
      std::vector<Tensor> gin = node->backward(gout);
      gout.clear();  // a gradient passed through unchanged (a cast to its own dtype) is then held by gin alone
      MT_ASSERT(gin.size() == node->inputs.size(), "node ", node->name(), " returned ", gin.size(), " grads for ",
                node->inputs.size(), " inputs");
      for (size_t j = 0; j < gin.size(); ++j) {
        auto& in = node->inputs[j];
        if (!in || !gin[j].defined()) continue;
        check_grad(*node, j, gin[j], *in);
        if (in->is_leaf && !in->grad.defined()) {
          // Leaves own their gradient storage (optimizers update it in place): a gradient that nothing else holds
          // (a fresh, packed result of this node's backward) is taken as it is, anything else is copied.
          in->grad = owned_alone(gin[j]) ? std::move(gin[j]) : gin[j].clone();
        } else if (in->is_leaf) {
          in->grad = add(in->grad, gin[j]);
        } else {
          if (!in->grad.defined()) holding.push_back(in);
          accumulate(in->grad, gin[j]);
        }
      }
    }
    node->release();
    for (auto& in : node->inputs) {
      if (!in || !in->is_leaf) continue;
      if (--pending[in.get()] == 0 && in->grad.defined())
        for (auto& h : in->grad_ready_hooks) h(in->grad);
    }
  }
  nodes_.clear();
}

}  // namespace mt
