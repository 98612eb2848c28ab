// Differentiable two-direction selective scan: validation, dispatch and the tape node (one node for both
// directions; its backward runs the two-direction backward kernel once).
#include "autograd/ops/selective_scan_bidir.h"

#include "autograd/autograd.h"
#include "autograd/ops/detail/selective_scan_inputs.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/elementwise.h"
#include "kernels/selective_scan_bidir.h"

namespace mt {

namespace {

constexpr const char* kOp = "selective_scan_bidir";

ops::scan::ScanInputs direction_inputs(const ScanDirection& s, const Tensor& z, const Tensor& mask,
                                       const Tensor& reset) {
  return ops::scan::make_inputs(s.u, s.delta, s.A, s.Bm, s.Cm, s.D_skip, z, s.delta_bias, Tensor(), mask, reset);
}

// Both directions' kernel parameters for the dispatch's kernels.
kernels::SelectiveScanBidirParams bidir_params(const ops::scan::ScanInputs& f, const ops::scan::ScanInputs& r,
                                               bool softplus) {
  return {ops::scan::params_for(f, softplus, /*reverse=*/false), ops::scan::params_for(r, softplus, true)};
}

// Gradients in input order: fwd's u, delta, A, Bm, Cm, D_skip, delta_bias, then rev's, then z.
std::vector<Tensor> bidir_backward(const ops::scan::ScanInputs& sf, const ops::scan::ScanInputs& sr, bool softplus,
                                   const Tensor& gyf_in, const Tensor& gyr_in, const Tensor& tile_states) {
  const Tensor gyf = ops::scan::grad_input(gyf_in, sf), gyr = ops::scan::grad_input(gyr_in, sr);
  const ops::Dispatch d(kOp, sf.u);
  const ops::scan::ScanInputs kf = ops::scan::kernel_inputs(d, sf), kr = ops::scan::kernel_inputs(d, sr);
  const Tensor gyfc = d.input(gyf), gyrc = d.input(gyr);
  kernels::SelectiveScanBidirParams p = bidir_params(kf, kr, softplus);
  p.fwd.dy = gyfc.data_ptr();
  p.rev.dy = gyrc.data_ptr();
  if (tile_states.defined()) {
    p.fwd.tile_states = tile_states.data_ptr();
    p.rev.tile_states = static_cast<char*>(tile_states.data_ptr()) + tile_states.nbytes() / 2;
  }
  const ops::scan::ScanGrads rf = ops::scan::bind_grads(d, sf, p.fwd), rr = ops::scan::bind_grads(d, sr, p.rev);
  d.run(kernels::selective_scan_bidir_bwd_cpu, MT_CUDA_KERNEL(selective_scan_bidir_bwd_cuda), p);
  const DType dt = sf.u.dtype();
  const ops::scan::ScanGrads f = ops::scan::grad_results(d, rf, dt), r = ops::scan::grad_results(d, rr, dt);
  const Tensor dz = f.dz.defined() ? add(f.dz, r.dz) : Tensor();
  return {f.du, f.ddelta, f.dA, f.dBm, f.dCm, f.dD, f.dbias, r.du, r.ddelta, r.dA, r.dBm, r.dCm, r.dD, r.dbias, dz};
}

}  // namespace

SelectiveScanBidirOut selective_scan_bidir(const ScanDirection& fwd, const ScanDirection& rev, const Tensor& z,
                                           bool delta_softplus, const Tensor& mask, const Tensor& reset) {
  ops::scan::validate(kOp, fwd.u, fwd.delta, fwd.A, fwd.Bm, fwd.Cm, fwd.D_skip, z, fwd.delta_bias, Tensor(), mask,
                      reset);
  ops::scan::validate(kOp, rev.u, rev.delta, rev.A, rev.Bm, rev.Cm, rev.D_skip, z, rev.delta_bias, Tensor(), mask,
                      reset);
  MT_CHECK_SHAPE(rev.u.shape() == fwd.u.shape() && rev.Bm.shape() == fwd.Bm.shape() && rev.u.dtype() == fwd.u.dtype() &&
                     rev.u.device() == fwd.u.device(),
                 kOp, ": the reverse direction's u and Bm must match the forward direction's ", fwd.u.describe(),
                 " and ", fwd.Bm.describe(), ", got ", rev.u.describe(), " and ", rev.Bm.describe());
  const ops::scan::ScanInputs sf = direction_inputs(fwd, z, mask, reset), sr = direction_inputs(rev, z, mask, reset);
  const DType dt = fwd.u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;

  const bool grad = any_requires_grad({&fwd.u, &fwd.delta, &fwd.A, &fwd.Bm, &fwd.Cm, &fwd.D_skip, &fwd.delta_bias,
                                       &rev.u, &rev.delta, &rev.A, &rev.Bm, &rev.Cm, &rev.D_skip, &rev.delta_bias, &z});
  const ops::Dispatch d(kOp, fwd.u);
  const ops::scan::ScanInputs kf = ops::scan::kernel_inputs(d, sf), kr = ops::scan::kernel_inputs(d, sr);
  const Tensor yf = d.output(fwd.u.shape(), dt), yr = d.output(fwd.u.shape(), dt);
  kernels::SelectiveScanBidirParams p = bidir_params(kf, kr, delta_softplus);
  p.fwd.y = yf.data_ptr();
  p.rev.y = yr.data_ptr();
  // CUDA with a tape: both directions' tile states, one buffer (kernels/selective_scan_bidir.h).
  Tensor tile_states;
  if (grad && !d.cpu()) {
    const int64_t n = ops::run_cuda(kOp, MT_CUDA_KERNEL(selective_scan_tile_states_numel_cuda), p.fwd);
    tile_states = Tensor::empty({2 * n}, wdt, fwd.u.device());
    p.fwd.tile_states = tile_states.data_ptr();
    p.rev.tile_states = static_cast<char*>(tile_states.data_ptr()) + tile_states.nbytes() / 2;
  }
  d.run(kernels::selective_scan_bidir_fwd_cpu, MT_CUDA_KERNEL(selective_scan_bidir_fwd_cuda), p);
  SelectiveScanBidirOut out;
  out.y_fwd = d.result(yf, dt);
  out.y_rev = d.result(yr, dt);

  if (grad) {
    auto node = make_lambda_node(kOp, [sf, sr, delta_softplus, tile_states](const std::vector<Tensor>& g) {
      return bidir_backward(sf, sr, delta_softplus, g[0], g[1], tile_states);
    });
    node->zero_fill_missing = false;  // a missing output gradient is read as zero, without a zeros tensor
    record_node(node,
                {fwd.u, fwd.delta, fwd.A, fwd.Bm, fwd.Cm, fwd.D_skip, fwd.delta_bias, rev.u, rev.delta, rev.A, rev.Bm,
                 rev.Cm, rev.D_skip, rev.delta_bias, z},
                {out.y_fwd, out.y_rev});
  }
  return out;
}

}  // namespace mt
