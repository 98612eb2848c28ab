// Public autograd API on tensors, and the helper every differentiable op uses to record itself.
#pragma once

#include <initializer_list>
#include <memory>
#include <vector>

#include "autograd/tape.h"

namespace mt {

// Mark a tensor as a leaf that accumulates a gradient (parameters, gradcheck inputs). Returns t.
Tensor& set_requires_grad(Tensor& t, bool on = true, const std::string& name = "");
bool requires_grad(const Tensor& t);
// Accumulated gradient of a leaf (undefined if none yet).
Tensor grad(const Tensor& t);
void set_grad(const Tensor& t, const Tensor& g);  // g may be undefined to clear
void zero_grad(const Tensor& t);                  // clears (undefined), cheaper than filling zeros
// Run when t's gradient is final in each backward (leaves only).
void add_grad_ready_hook(const Tensor& t, std::function<void(const Tensor&)> hook);
// Backward from a scalar (numel 1) through the current thread's tape.
void backward(const Tensor& loss);
// Backward from a non-scalar with an explicit upstream gradient of the same shape.
void backward(const Tensor& out, const Tensor& grad_out);

// ---- for op implementations ----
// True when grad mode is on and any input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);
// Wire `node` to inputs and outputs and append it to the current tape. Outputs become non-leaf tensors that
// require grad. Call only when any_requires_grad(...) is true.
void record_node(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs);

// A node whose backward is a lambda: the usual way ops record themselves.
//   auto node = make_lambda_node("mul", [a, b](const std::vector<Tensor>& g) { return {g[0]*b, g[0]*a}; });
// Captured tensors are the saved tensors; they are released (the lambda destroyed) after backward ran.
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;
std::shared_ptr<Node> make_lambda_node(const char* name, BackwardFn fn);

}  // namespace mt
