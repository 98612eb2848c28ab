// Differentiable two-direction selective scan: both directions of a bidirectional (Caduceus) layer in one call.
//
//   fwd, rev: each direction's own u, delta, Bm, Cm ([B, L, D] / [B, L, N]), A ([D, N]), D_skip, delta_bias ([D]),
//   with the shapes, dtypes and meaning of selective_scan's arguments; both directions of equal shapes and dtype.
//   z, mask, reset: shared ([B, L, D] / [B, L] / i32 [B, L], each optional).
//   y_fwd = selective_scan(fwd..., z, softplus, no initial state, mask, reset).y
//   y_rev = selective_scan(rev..., z, softplus, no initial state, mask, reset, reverse = true).y
// Neither direction takes an initial state or returns its last state. Outputs and gradients equal those of the two
// selective_scan calls bit for bit on each backend (z's gradient is the sum of the two directions' parts, as the
// tape would add them); on CUDA every pass runs one launch for both directions (kernels/selective_scan_bidir.h).
#pragma once

#include "core/tensor.h"

namespace mt {

// One direction's inputs of selective_scan_bidir (D_skip and delta_bias may be undefined: absent).
struct ScanDirection {
  Tensor u, delta, A, Bm, Cm, D_skip, delta_bias;
};

struct SelectiveScanBidirOut {
  Tensor y_fwd, y_rev;
};

SelectiveScanBidirOut selective_scan_bidir(const ScanDirection& fwd, const ScanDirection& rev, const Tensor& z,
                                           bool delta_softplus, const Tensor& mask = Tensor(),
                                           const Tensor& reset = Tensor());

}  // namespace mt
