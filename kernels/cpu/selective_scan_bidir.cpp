// CPU reference of the two-direction selective scan: the two one-direction scans, one after the other.
#include "kernels/selective_scan_bidir.h"

namespace mt::kernels {

void selective_scan_bidir_fwd_cpu(const SelectiveScanBidirParams& p) {
  selective_scan_fwd_cpu(p.fwd);
  selective_scan_fwd_cpu(p.rev);
}

void selective_scan_bidir_bwd_cpu(const SelectiveScanBidirParams& p) {
  selective_scan_bwd_cpu(p.fwd);
  selective_scan_bwd_cpu(p.rev);
}

}  // namespace mt::kernels
