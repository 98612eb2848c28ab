// Activation checkpointing: run a function without keeping its activations, and recompute them in the backward.
//
// checkpoint(fn, inputs, params) runs fn(inputs) without a tape and records one node with inputs (inputs...,
// params...) and fn's outputs. Its backward runs fn again on a tape of its own, from detached copies of the inputs
// and with the parameters standing in as fresh leaves, back-propagates the outputs' gradients through it, and returns
// the gradients of the inputs and of the parameters to the outer backward. So only the inputs are saved, the
// gradients are the same bits as without checkpointing (the same ops run in the same order), and a parameter's
// grad-ready hooks fire once, in the outer backward, when its gradient is final.
//
// fn must be deterministic and must read no parameter that is not in `params` that needs a gradient (such a
// parameter would receive its gradient from the inner backward directly). Inputs may be undefined tensors (passed
// through as undefined); outputs must be defined float tensors.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace mt {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor*>& params);

}  // namespace mt
