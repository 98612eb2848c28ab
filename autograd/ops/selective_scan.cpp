// Differentiable selective scan: validation, device dispatch and the tape node (math in kernels/selective_scan.h).
//
// The node saves only the (contiguous) inputs; the backward kernels recompute the states. Gradients: du, ddelta,
// dz, dBm, dCm in the storage dtype of u; dA, dD_skip, ddelta_bias, dinitial_state in f32 (f64 for f64 inputs).
#include "autograd/ops/selective_scan.h"

#include "autograd/autograd.h"
#include "autograd/ops/detail/selective_scan_inputs.h"
#include "autograd/ops/dispatch.h"
#include "kernels/selective_scan.h"

namespace mt {

namespace {

constexpr const char* kOp = "selective_scan";

const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// tile_states (CUDA, optional): the forward's saved tile states (selective_scan_tile_states_numel_cuda).
std::vector<Tensor> scan_backward(const ops::scan::ScanInputs& s, bool softplus, bool reverse, const Tensor& gy_in,
                                  const Tensor& gS_in, const Tensor& tile_states) {
  const Tensor gy = ops::scan::grad_input(gy_in, s), gS = ops::scan::state_grad_input(gS_in, s);
  const ops::Dispatch d(kOp, s.u);
  const ops::scan::ScanInputs k = ops::scan::kernel_inputs(d, s);
  const Tensor gyc = d.input(gy);
  kernels::SelectiveScanParams p = ops::scan::params_for(k, softplus, reverse);
  p.dy = gyc.data_ptr();
  p.dlast_state = ptr(gS);
  p.tile_states = tile_states.defined() ? tile_states.data_ptr() : nullptr;
  const ops::scan::ScanGrads raw = ops::scan::bind_grads(d, s, p);
  d.run(kernels::selective_scan_bwd_cpu, MT_CUDA_KERNEL(selective_scan_bwd_cuda), p);
  const ops::scan::ScanGrads g = ops::scan::grad_results(d, raw, s.u.dtype());
  return {g.du, g.ddelta, g.dA, g.dBm, g.dCm, g.dD, g.dz, g.dbias, g.dinit};
}

}  // namespace

SelectiveScanOut selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias,
                                bool delta_softplus, const Tensor& initial_state, const Tensor& mask,
                                const Tensor& reset, bool reverse) {
  ops::scan::validate(kOp, u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask, reset);
  const ops::scan::ScanInputs s =
      ops::scan::make_inputs(u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask, reset);
  const DType dt = u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = u.device();
  const int64_t B = u.size(0), D = u.size(2), N = Bm.size(2);

  const bool grad = any_requires_grad({&u, &delta, &A, &Bm, &Cm, &D_skip, &z, &delta_bias, &initial_state});
  SelectiveScanOut out;
  out.last_state = Tensor::empty({B, D, N}, wdt, dev);
  const ops::Dispatch d(kOp, u);
  const ops::scan::ScanInputs k = ops::scan::kernel_inputs(d, s);
  const Tensor y = d.output(u.shape(), dt);
  kernels::SelectiveScanParams p = ops::scan::params_for(k, delta_softplus, reverse);
  p.y = y.data_ptr();
  p.last_state = out.last_state.data_ptr();
  // CUDA with a tape: the forward saves the state entering every tile (1/16 of all states) for the backward.
  Tensor tile_states;
  if (grad && !d.cpu()) {
    tile_states =
        Tensor::empty({ops::run_cuda(kOp, MT_CUDA_KERNEL(selective_scan_tile_states_numel_cuda), p)}, wdt, dev);
    p.tile_states = tile_states.data_ptr();
  }
  d.run(kernels::selective_scan_fwd_cpu, MT_CUDA_KERNEL(selective_scan_fwd_cuda), p);
  out.y = d.result(y, dt);

  if (grad) {
    auto node = make_lambda_node(kOp, [s, delta_softplus, reverse, tile_states](const std::vector<Tensor>& g) {
      return scan_backward(s, delta_softplus, reverse, g[0], g[1], tile_states);
    });
    node->zero_fill_missing = false;  // no gradient for y or last_state is read as zero, without a zeros tensor
    record_node(node, {u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state}, {out.y, out.last_state});
  }
  return out;
}

}  // namespace mt
