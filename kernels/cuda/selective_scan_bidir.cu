// CUDA two-direction selective scan (kernels/selective_scan_bidir.h): the one-direction kernels of
// selective_scan_fwd.cuh and selective_scan_bwd.cuh, launched once for both directions (NDIR = 2).
#include "kernels/cuda/selective_scan_bwd.cuh"
#include "kernels/selective_scan_bidir.h"

namespace mt::kernels {

namespace {

// Checks both directions and that their tile states, when given, are the one buffer the launch indexes by row.
ScanDirs<2> bidir_dirs(const SelectiveScanBidirParams& p, const char* what) {
  check_params(p.fwd, what);
  check_params(p.rev, what);
  check_pair(p.fwd, p.rev, what);
  const bool f = p.fwd.tile_states != nullptr, r = p.rev.tile_states != nullptr;
  MT_CHECK(f == r, ErrorKind::Internal, what, ": tile states given for one direction only");
  if (f) {
    const size_t w = p.fwd.dtype == DType::F64 ? sizeof(double) : sizeof(float);
    MT_CHECK(static_cast<const char*>(p.rev.tile_states) ==
                 static_cast<const char*>(p.fwd.tile_states) + selective_scan_tile_states_numel_cuda(p.fwd) * w,
             ErrorKind::Internal, what, ": rev's tile states must follow fwd's in one buffer");
  }
  return ScanDirs<2>{{p.fwd, p.rev}};
}

}  // namespace

void selective_scan_bidir_fwd_cuda(const SelectiveScanBidirParams& p) {
  const ScanDirs<2> dirs = bidir_dirs(p, "selective_scan_bidir_fwd_cuda");
  cuda::dispatch_float(p.fwd.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.fwd.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_fwd<T, NMAX, Tuning::states_per_thread(NMAX), 2>(dirs);
    });
  });
}

void selective_scan_bidir_bwd_cuda(const SelectiveScanBidirParams& p) {
  const ScanDirs<2> dirs = bidir_dirs(p, "selective_scan_bidir_bwd_cuda");
  cuda::dispatch_float(p.fwd.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.fwd.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_bwd<T, NMAX, Tuning::states_per_thread(NMAX), 2>(dirs);
    });
  });
}

}  // namespace mt::kernels
