// CUDA selective scan, forward, of one scan (the kernels: selective_scan_fwd.cuh, selective_scan_staging.cuh).
#include "kernels/cuda/selective_scan_fwd.cuh"

namespace mt::kernels {

void selective_scan_fwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_fwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_fwd<T, NMAX, Tuning::states_per_thread(NMAX), 1>(ScanDirs<1>{{p}});
    });
  });
}

int64_t selective_scan_tile_states_numel_cuda(const SelectiveScanParams& p) {
  const int64_t TT = p.dtype == DType::F64 ? Tuning::tile_steps<double>() : Tuning::tile_steps<float>();
  return p.B * ((p.L + TT - 1) / TT) * p.N * p.D;
}

}  // namespace mt::kernels
