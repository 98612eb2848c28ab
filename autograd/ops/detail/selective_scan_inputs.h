// What the selective-scan ops (selective_scan, selective_scan_bidir) share for one direction of a scan: the checks
// of its inputs, the contiguous copies the kernels read, the kernel parameters and the gradient buffers. Math:
// kernels/selective_scan.h.
#pragma once

#include <utility>
#include <vector>

#include "autograd/ops/dispatch.h"
#include "core/tensor.h"
#include "kernels/selective_scan.h"

namespace mt::ops::scan {

// The inputs of one scan as the kernels read them: contiguous, but Bm and Cm may stay column views of one wider
// tensor on CUDA (bc_inputs); optional ones undefined when absent.
struct ScanInputs {
  Tensor u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask, reset;
};

// Throws mt::Error(Shape) naming op and the offending argument.
void validate(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
              const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias, const Tensor& initial_state,
              const Tensor& mask, const Tensor& reset);

ScanInputs make_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                       const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias, const Tensor& initial_state,
                       const Tensor& mask, const Tensor& reset);

// The inputs in the dtype the dispatch's kernels read (f32 copies of 16-bit activations on the CPU).
ScanInputs kernel_inputs(const Dispatch& d, const ScanInputs& s);

// Pointers and sizes of s (already in the dtype the kernel reads).
kernels::SelectiveScanParams params_for(const ScanInputs& s, bool softplus, bool reverse);

// The gradients of one scan, in the input order of selective_scan: u, delta, A, Bm, Cm, D_skip, z, delta_bias,
// initial_state (undefined where the input is absent).
struct ScanGrads {
  Tensor du, ddelta, dA, dBm, dCm, dD, dz, dbias, dinit;
};

// Allocates the backward's outputs for s (in the dispatch's kernel dtypes) and points p's output slots at them.
ScanGrads bind_grads(const Dispatch& d, const ScanInputs& s, kernels::SelectiveScanParams& p);

// The gradients in their storage dtypes (u's for du, ddelta, dz, dBm, dCm) once the kernel has run.
ScanGrads grad_results(const Dispatch& d, const ScanGrads& g, DType dt);

// gy (and gS) as the backward reads them: on s's device, contiguous, in u's dtype (gS in the compute dtype); an
// undefined gy becomes zeros.
Tensor grad_input(const Tensor& gy, const ScanInputs& s);
Tensor state_grad_input(const Tensor& gS, const ScanInputs& s);

}  // namespace mt::ops::scan
