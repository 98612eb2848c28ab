// Gradient health for mixed-precision training: find inf/NaN gradients before the optimizer touches anything,
// the global L2 norm for clipping, and the clip factor.
//
// Order of a step (docs/DESIGN.md F9): first_nonfinite_grad (or a non-finite grad_global_norm; grad_health does
// both) -> skip the step
// without touching parameters, moments or the Adam step count; only a finite norm may feed clip_factor, running
// statistics or the update.
//
// All gradients are expected on one device per process (the CPU, or the current CUDA device); CPU and CUDA
// gradients may be mixed, each is checked where it lives.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt::optim {

// Index (into params) of the first parameter whose gradient has an inf or NaN, or -1. Checks EVERY gradient before
// anyone touches any: on CUDA one kernel per tensor writes into one device flag array and the host synchronises
// once at the end. Parameters without a gradient are skipped. Gradients must be f32 / f64 / bf16 / f16.
int64_t first_nonfinite_grad(const std::vector<Tensor*>& params);

// Global L2 norm sqrt(sum over all gradients of g^2), accumulated in double. Returns NaN or +inf when any gradient
// element is NaN or inf (never hides a bad value). On CUDA: per-tensor partial sums into one device buffer, one
// synchronisation; the result is deterministic (fixed summation order). Note: f64 gradients whose squares overflow
// double (|g| > ~1e154) also give +inf, which the caller treats like any other non-finite norm (skip).
double grad_global_norm(const std::vector<Tensor*>& params);

// Both checks of a step in one pass over the gradients in the common case. Every gradient's sum of squares is
// formed first (as grad_global_norm does): a gradient holding an inf or NaN makes its sum non-finite, and a finite
// f32 / bf16 / f16 gradient never does (its squares, summed in double, stay far below double's range). Only when a
// sum is not finite does first_nonfinite_grad run, to tell a bad gradient from an f64 one whose squares overflow.
//   first_bad: -1 all gradients finite and norm finite; >= 0 what first_nonfinite_grad returns; -3 every gradient
//   finite but the norm not (f64 overflow). norm: grad_global_norm's value (bits included) when first_bad is -1.
struct GradHealth {
  int64_t first_bad = -1;
  double norm = 0.0;
};
GradHealth grad_health(const std::vector<Tensor*>& params);

// Factor to multiply the gradients by for clipping: max_norm / norm when norm > max_norm, else 1.
// A non-finite norm returns NaN whatever max_norm is: the caller must skip the step and never multiply by it
// (a NaN norm would pass a `norm > max` test unnoticed). max_norm <= 0 (or NaN) disables clipping: 1.
double clip_factor(double norm, double max_norm);

}  // namespace mt::optim
