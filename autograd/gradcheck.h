// Gradient check by central differences in float64 (the tests' way of proving every backward).
//
// f maps the inputs to one output tensor of any shape. The check draws a fixed random weight W of the output's
// shape and compares, for every element x_i of every float input that requires grad,
//   analytic  d<W, f(x)>/dx_i   (one backward with upstream gradient W)
//   numeric   (<W, f(x + eps e_i)> - <W, f(x - eps e_i)>) / (2 eps)
// and passes when |analytic - numeric| <= atol + rtol * |numeric| everywhere.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0.0;
  std::string message;  // first failure: input index, element index, analytic vs numeric
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

// inputs: CPU f64 tensors (float ones are differentiated; set requires_grad on those you want checked, or
// leave none set to check all float inputs). Integer inputs (ids, targets) pass through unchanged.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                          const GradcheckOptions& opt = {});

}  // namespace mt
