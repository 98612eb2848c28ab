// Both directions of a bidirectional (Caduceus) layer's selective scan in one call: `fwd` scans the sequence forward,
// `rev` backwards (SelectiveScanParams::reverse, read in place). Each direction has its own inputs, weights and
// outputs, and the math of kernels/selective_scan.h applied to it alone; the two must share B, L, D, N and the
// storage dtype.
//
// CPU: the two scans one after the other. CUDA: every pass of the scan (forward: the chunks' local pass, the combine
// and y; backward: the same with the gradient, the checkpoint pass, the backward kernel and the fixed-order
// reductions) is one launch for both directions: the launch's batch rows are fwd's B rows, then rev's, and each
// block runs the one-direction code on its own direction's parameters. The sequence is chunked as one direction
// alone would be, so each direction's outputs and gradients have the bits of selective_scan_{fwd,bwd}_cuda on that
// direction by itself.
//
// tile_states (CUDA, optional): one buffer for both, rev.tile_states = fwd.tile_states +
// selective_scan_tile_states_numel_cuda(fwd), or both null.
#pragma once

#include "kernels/selective_scan.h"

namespace mt::kernels {

struct SelectiveScanBidirParams {
  SelectiveScanParams fwd, rev;
};

void selective_scan_bidir_fwd_cpu(const SelectiveScanBidirParams& p);
void selective_scan_bidir_bwd_cpu(const SelectiveScanBidirParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only (MT_CUDA_KERNEL, autograd/ops/dispatch.h). 2 B <= 65535.
void selective_scan_bidir_fwd_cuda(const SelectiveScanBidirParams& p);
void selective_scan_bidir_bwd_cuda(const SelectiveScanBidirParams& p);

}  // namespace mt::kernels
