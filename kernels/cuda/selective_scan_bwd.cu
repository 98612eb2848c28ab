// CUDA selective scan, backward, of one scan (the kernels: selective_scan_bwd.cuh).
#include "kernels/cuda/selective_scan_bwd.cuh"

namespace mt::kernels {

void selective_scan_bwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_bwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_bwd<T, NMAX, Tuning::states_per_thread(NMAX), 1>(ScanDirs<1>{{p}});
    });
  });
}

}  // namespace mt::kernels
