// CUDA selective scan, forward (the kernels: selective_scan_fwd.cuh, selective_scan_staging.cuh).
#include "kernels/cuda/selective_scan_fwd.cuh"

namespace mt::kernels {

namespace {

template <typename T, int NMAX, int NPT>
void scan_fwd(const SelectiveScanParams& p) {
  using W = typename Compute<T>::type;
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tuning::tile_steps<W>();
  const auto [CL, nch] = chunking(p, NT, TT);
  const dim3 grid(static_cast<unsigned>((p.D + 31) / 32), static_cast<unsigned>(nch), static_cast<unsigned>(p.B));
  const size_t smem_y = sizeof(W) * G * TT * 32;
  static bool smem_set = false;  // one per template instantiation
  allow_smem(scan_fwd_kernel<T, NMAX, NPT, Pass::Y>, smem_y, smem_set);
  W* Hs = static_cast<W*>(p.tile_states);
  if (nch == 1) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Y>
        <<<grid, NT, smem_y, cuda::stream()>>>(p, CL, 1, nullptr, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
    return;
  }
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const int64_t nS = p.B * nch * p.N * p.D;
  Tensor ws = Tensor::empty({nS + p.B * nch * p.D}, wdt, Device::cuda(CudaContext::get().device()));
  W* Sb = static_cast<W*>(ws.data_ptr());  // stream-ordered reuse through the caching allocator
  W* sumdt = Sb + nS;
  scan_fwd_kernel<T, NMAX, NPT, Pass::Local><<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, nullptr, Sb, nullptr, sumdt);
  MT_CUDA_CHECK_LAUNCH();
  launch_combine<W>(p, nch, Sb, nullptr, sumdt, static_cast<W*>(p.last_state));
  scan_fwd_kernel<T, NMAX, NPT, Pass::Y><<<grid, NT, smem_y, cuda::stream()>>>(p, CL, nch, Sb, Hs, nullptr, nullptr);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void selective_scan_fwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_fwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_fwd<T, NMAX, Tuning::states_per_thread(NMAX)>(p);
    });
  });
}

int64_t selective_scan_tile_states_numel_cuda(const SelectiveScanParams& p) {
  const int64_t TT = p.dtype == DType::F64 ? Tuning::tile_steps<double>() : Tuning::tile_steps<float>();
  return p.B * ((p.L + TT - 1) / TT) * p.N * p.D;
}

}  // namespace mt::kernels
