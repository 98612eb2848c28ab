#include "nn/module.h"

#include <algorithm>
#include <set>

#include "autograd/autograd.h"

namespace mt::nn {

namespace {
// Edit distance, for "did you mean" hints on unknown parameter names.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (auto& c : candidates) {
    size_t d = edit_distance(name, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best_d <= std::max<size_t>(3, name.size() / 4) ? best : "";
}
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor value) {
  params_.emplace_back(name, std::move(value));
  Tensor& t = params_.back().second;
  set_requires_grad(t, true, name);
  entries_.push_back({name, &t, nullptr});
  return t;
}

void Module::register_module(const std::string& name, Module& child) { entries_.push_back({name, nullptr, &child}); }

std::vector<std::pair<std::string, Tensor*>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const Entry& e : entries_) {
    if (e.param) {
      out.emplace_back(prefix + e.name, e.param);
    } else {
      auto sub = e.child->named_parameters(prefix + e.name + ".");
      out.insert(out.end(), sub.begin(), sub.end());
    }
  }
  return out;
}

std::vector<Tensor*> Module::parameters() const {
  std::vector<Tensor*> out;
  for (auto& np : named_parameters()) out.push_back(np.second);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& np : named_parameters()) n += np.second->numel();
  return n;
}

Tensor& Module::parameter(const std::string& name) const {
  std::vector<std::string> names;
  for (auto& np : named_parameters()) {
    if (np.first == name) return *np.second;
    names.push_back(np.first);
  }
  std::string hint = nearest(name, names);
  throw Error(ErrorKind::Checkpoint,
              str("no parameter named '", name, "'", hint.empty() ? "" : str(" (did you mean '", hint, "'?)")));
}

void Module::to(Device dev) {
  for (auto& np : named_parameters()) {
    Tensor& t = *np.second;
    if (t.device() == dev) continue;
    Tensor moved = t.to(dev);
    set_requires_grad(moved, requires_grad(t), np.first);
    t = moved;
  }
}

void Module::to(DType dtype) {
  for (auto& np : named_parameters()) {
    Tensor& t = *np.second;
    if (t.dtype() == dtype) continue;
    Tensor conv = t.to(dtype);
    set_requires_grad(conv, requires_grad(t), np.first);
    t = conv;
  }
}

void Module::zero_grad() {
  for (auto* t : parameters()) mt::zero_grad(*t);
}

void Module::set_training(bool on) {
  training_ = on;
  for (const Entry& e : entries_)
    if (e.child) e.child->set_training(on);
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& np : named_parameters()) out[np.first] = np.second->to(Device::cpu()).contiguous().clone();
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& tensors, bool strict, const std::string& source) {
  auto named = named_parameters();
  std::vector<std::string> names;
  std::set<std::string> known;
  for (auto& np : named) {
    names.push_back(np.first);
    known.insert(np.first);
  }
  if (strict) {
    for (auto& kv : tensors) {
      if (known.count(kv.first)) continue;
      std::string hint = nearest(kv.first, names);
      throw Error(ErrorKind::Checkpoint, str(source, ": unknown tensor '", kv.first, "'",
                                             hint.empty() ? "" : str(" (did you mean '", hint, "'?)")));
    }
  }
  // Check everything before touching any parameter, so a failed load leaves the model unchanged.
  for (auto& np : named) {
    auto it = tensors.find(np.first);
    if (it == tensors.end()) {
      MT_CHECK(!strict, ErrorKind::Checkpoint, source, ": missing tensor '", np.first, "' (model expects ",
               np.second->describe(), ")");
      continue;
    }
    MT_CHECK(it->second.shape() == np.second->shape(), ErrorKind::Checkpoint, source, ": size mismatch for ", np.first,
             ": file ", shape_str(it->second.shape()), ", model ", shape_str(np.second->shape()));
    MT_CHECK(is_floating(it->second.dtype()), ErrorKind::Checkpoint, source, ": tensor ", np.first, " has dtype ",
             dtype_name(it->second.dtype()), ", expected a float dtype");
  }
  NoGradGuard no_grad;
  for (auto& np : named) {
    auto it = tensors.find(np.first);
    if (it == tensors.end()) continue;
    np.second->copy_(it->second);
  }
}

}  // namespace mt::nn
