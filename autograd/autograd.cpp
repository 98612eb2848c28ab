#include "autograd/autograd.h"

namespace mt {

namespace {
std::shared_ptr<AutogradMeta>& meta_of(const Tensor& t) { return t.impl().autograd; }

class LambdaNode : public Node {
 public:
  LambdaNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return fn_(g); }
  void release() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
};
}  // namespace

Tensor& set_requires_grad(Tensor& t, bool on, const std::string& name) {
  auto& m = meta_of(t);
  if (on) {
    MT_CHECK_SHAPE(is_floating(t.dtype()), "requires_grad needs a float tensor, got ", t.describe());
    MT_CHECK_SHAPE(!m || m->is_leaf, "requires_grad can only be set on leaf tensors");
    if (!m) m = std::make_shared<AutogradMeta>();
    m->requires_grad = true;
    m->is_leaf = true;
    if (!name.empty()) m->name = name;
  } else if (m) {
    m->requires_grad = false;
  }
  return t;
}

bool requires_grad(const Tensor& t) {
  if (!t.defined()) return false;
  auto& m = t.impl().autograd;
  return m && m->requires_grad;
}

Tensor grad(const Tensor& t) {
  auto& m = meta_of(t);
  return m ? m->grad : Tensor();
}

void set_grad(const Tensor& t, const Tensor& g) {
  auto& m = meta_of(t);
  if (!m) m = std::make_shared<AutogradMeta>();
  m->grad = g;
}

void zero_grad(const Tensor& t) {
  auto& m = meta_of(t);
  if (m) m->grad = Tensor();
}

void add_grad_ready_hook(const Tensor& t, std::function<void(const Tensor&)> hook) {
  auto& m = meta_of(t);
  MT_CHECK_SHAPE(m && m->requires_grad && m->is_leaf, "grad-ready hooks need a leaf that requires grad");
  m->grad_ready_hooks.push_back(std::move(hook));
}

void backward(const Tensor& loss) {
  MT_CHECK_SHAPE(loss.numel() == 1, "backward() without a gradient needs a scalar, got ", loss.describe());
  current_tape().backward(loss);
}

void backward(const Tensor& out, const Tensor& grad_out) { current_tape().backward(out, grad_out); }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && requires_grad(*t)) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (requires_grad(t)) return true;
  return false;
}

void record_node(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs) {
  node->inputs.clear();
  for (const Tensor& t : inputs) node->inputs.push_back(requires_grad(t) ? t.impl().autograd : nullptr);
  for (size_t k = 0; k < outputs.size(); ++k) {
    const Tensor& o = outputs[k];
    auto m = std::make_shared<AutogradMeta>();
    m->requires_grad = true;
    m->is_leaf = false;
    m->grad_fn = node;
    m->output_nr = static_cast<int>(k);
    MT_ASSERT(!o.impl().autograd, "op output already has autograd state");
    o.impl().autograd = m;
    node->outputs.push_back(m);
    node->output_shapes.push_back(o.shape());
    node->output_dtypes.push_back(o.dtype());
    node->output_devices.push_back(o.device());
  }
  current_tape().record(node);
}

std::shared_ptr<Node> make_lambda_node(const char* name, BackwardFn fn) {
  return std::make_shared<LambdaNode>(name, std::move(fn));
}

}  // namespace mt
