// Differentiable selective scan: validation, device dispatch and the tape node (math in kernels/selective_scan.h).
//
// The node saves only the (contiguous) inputs; the backward kernels recompute the states. Gradients: du, ddelta,
// dz, dBm, dCm in the storage dtype of u; dA, dD_skip, ddelta_bias, dinitial_state in f32 (f64 for f64 inputs).
#include "autograd/ops/selective_scan.h"

#include "autograd/autograd.h"
#include "autograd/ops/op_util.h"
#include "kernels/selective_scan.h"

namespace mt {

namespace {

constexpr const char* kOp = "selective_scan";

// The inputs of one call, contiguous (optional ones undefined when absent).
struct ScanInputs {
  Tensor u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask;
};

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void check_weight(const char* arg, const Tensor& t, const Shape& shape, DType wdt, const Tensor& u) {
  if (!t.defined()) return;
  MT_CHECK_SHAPE(t.shape() == shape && t.dtype() == wdt && t.device() == u.device(), kOp, ": ", arg, " must be ",
                 dtype_name(wdt), shape_str(shape), " on ", u.device().str(), " (", dtype_name(wdt), " because u is ",
                 dtype_name(u.dtype()), "), got ", t.describe());
}

// Throws mt::Error(Shape) naming the offending argument.
void validate(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
              const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias, const Tensor& initial_state,
              const Tensor& mask) {
  ops::check_float(kOp, "u", u);
  ops::check_float(kOp, "delta", delta);
  ops::check_float(kOp, "A", A);
  ops::check_float(kOp, "Bm", Bm);
  ops::check_float(kOp, "Cm", Cm);
  MT_CHECK_SHAPE(u.dim() == 3, kOp, ": u must be [B, L, D], got ", u.describe());
  const int64_t B = u.size(0), L = u.size(1), D = u.size(2);
  MT_CHECK_SHAPE(B >= 1 && L >= 1 && D >= 1, kOp, ": u must have B, L, D >= 1, got ", u.describe());
  MT_CHECK_SHAPE(Bm.dim() == 3 && Bm.size(0) == B && Bm.size(1) == L && Bm.size(2) >= 1, kOp,
                 ": Bm must be [B, L, N] = [", B, ", ", L, ", N] with N >= 1, got ", Bm.describe());
  const int64_t N = Bm.size(2);
  MT_CHECK_SHAPE(delta.shape() == u.shape(), kOp, ": delta must have u's shape ", shape_str(u.shape()), ", got ",
                 delta.describe());
  MT_CHECK_SHAPE(Cm.shape() == Bm.shape(), kOp, ": Cm must have Bm's shape ", shape_str(Bm.shape()), ", got ",
                 Cm.describe());
  std::vector<const Tensor*> same = {&u, &delta, &Bm, &Cm};
  if (z.defined()) {
    ops::check_float(kOp, "z", z);
    MT_CHECK_SHAPE(z.shape() == u.shape(), kOp, ": z must have u's shape ", shape_str(u.shape()), ", got ",
                   z.describe());
    same.push_back(&z);
  }
  ops::check_same(kOp, same);
  const DType wdt = u.dtype() == DType::F64 ? DType::F64 : DType::F32;
  check_weight("A", A, {D, N}, wdt, u);
  check_weight("D_skip", D_skip, {D}, wdt, u);
  check_weight("delta_bias", delta_bias, {D}, wdt, u);
  check_weight("initial_state", initial_state, {B, D, N}, wdt, u);
  if (mask.defined())
    MT_CHECK_SHAPE(mask.shape() == Shape({B, L}) && mask.device() == u.device(), kOp, ": mask must be [B, L] = [", B,
                   ", ", L, "] on ", u.device().str(), ", got ", mask.describe());
#if defined(MT_WITH_CUDA)
  MT_CHECK_SHAPE(u.device().is_cpu() || N <= kernels::kSelectiveScanCudaMaxN, kOp,
                 ": the CUDA kernel supports N <= ", kernels::kSelectiveScanCudaMaxN, ", got N = ", N);
#endif
}

// Pointers and sizes of the inputs (already in the dtype the kernel reads).
kernels::SelectiveScanParams params_for(const ScanInputs& s, bool softplus) {
  kernels::SelectiveScanParams p;
  p.B = s.u.size(0);
  p.L = s.u.size(1);
  p.D = s.u.size(2);
  p.N = s.Bm.size(2);
  p.dtype = s.u.dtype();
  p.delta_softplus = softplus;
  p.u = ptr(s.u);
  p.delta = ptr(s.delta);
  p.A = ptr(s.A);
  p.Bm = ptr(s.Bm);
  p.Cm = ptr(s.Cm);
  p.D_skip = ptr(s.D_skip);
  p.z = ptr(s.z);
  p.delta_bias = ptr(s.delta_bias);
  p.initial_state = ptr(s.initial_state);
  p.mask = ptr(s.mask);
  if (s.mask.defined()) p.mask_dtype = s.mask.dtype();
  return p;
}

// The CPU kernels read f32 / f64: bf16 / f16 activations go through f32 copies (weights are f32 already).
ScanInputs cpu_compute(const ScanInputs& s) {
  ScanInputs c = s;
  c.u = ops::as_cpu_compute(s.u);
  c.delta = ops::as_cpu_compute(s.delta);
  c.Bm = ops::as_cpu_compute(s.Bm);
  c.Cm = ops::as_cpu_compute(s.Cm);
  if (s.z.defined()) c.z = ops::as_cpu_compute(s.z);
  return c;
}

// Gradients in input order: u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state.
// Point the backward's output slots at the gradient tensors (undefined ones stay null: not wanted).
void bind_grads(kernels::SelectiveScanParams& p, const Tensor& du, const Tensor& ddelta, const Tensor& dz,
                const Tensor& dA, const Tensor& dBm, const Tensor& dCm, const Tensor& dD, const Tensor& dbias,
                const Tensor& dinit) {
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dz = mut_ptr(dz);
  p.dA = dA.data_ptr();
  p.dBm = dBm.data_ptr();
  p.dCm = dCm.data_ptr();
  p.dD_skip = mut_ptr(dD);
  p.ddelta_bias = mut_ptr(dbias);
  p.dinitial_state = mut_ptr(dinit);
}

// tile_states (CUDA, optional): the forward's saved tile states (selective_scan_tile_states_numel_cuda).
std::vector<Tensor> scan_backward(const ScanInputs& s, bool softplus, const Tensor& gy_in, const Tensor& gS_in,
                                  const Tensor& tile_states) {
  const DType dt = s.u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = s.u.device();
  const int64_t B = s.u.size(0), L = s.u.size(1), D = s.u.size(2), N = s.Bm.size(2);
  Tensor gy = gy_in.defined() ? gy_in.to(dev).to(dt).contiguous() : Tensor::zeros(s.u.shape(), dt, dev);
  Tensor gS = gS_in.defined() ? gS_in.to(dev).to(wdt).contiguous() : Tensor();

  Tensor du, ddelta, dz, dA, dBm, dCm, dD, dbias, dinit;
  if (dev.is_cpu()) {
    const ScanInputs c = cpu_compute(s);
    const DType cdt = c.u.dtype();  // == wdt
    Tensor gyc = ops::as_cpu_compute(gy);
    du = Tensor::empty(s.u.shape(), cdt);
    ddelta = Tensor::empty(s.u.shape(), cdt);
    if (s.z.defined()) dz = Tensor::empty(s.u.shape(), cdt);
    dA = Tensor::empty({D, N}, wdt);
    dBm = Tensor::empty({B, L, N}, cdt);
    dCm = Tensor::empty({B, L, N}, cdt);
    if (s.D_skip.defined()) dD = Tensor::empty({D}, wdt);
    if (s.delta_bias.defined()) dbias = Tensor::empty({D}, wdt);
    if (s.initial_state.defined()) dinit = Tensor::empty({B, D, N}, wdt);
    kernels::SelectiveScanParams p = params_for(c, softplus);
    p.dy = gyc.data_ptr();
    p.dlast_state = ptr(gS);
    bind_grads(p, du, ddelta, dz, dA, dBm, dCm, dD, dbias, dinit);
    kernels::selective_scan_bwd_cpu(p);
    du = ops::from_cpu_compute(du, dt);
    ddelta = ops::from_cpu_compute(ddelta, dt);
    if (dz.defined()) dz = ops::from_cpu_compute(dz, dt);
    dBm = ops::from_cpu_compute(dBm, dt);
    dCm = ops::from_cpu_compute(dCm, dt);
  } else {
    MT_CUDA_ONLY(kOp, {
      du = Tensor::empty(s.u.shape(), dt, dev);
      ddelta = Tensor::empty(s.u.shape(), dt, dev);
      if (s.z.defined()) dz = Tensor::empty(s.u.shape(), dt, dev);
      dA = Tensor::empty({D, N}, wdt, dev);
      dBm = Tensor::empty({B, L, N}, wdt, dev);
      dCm = Tensor::empty({B, L, N}, wdt, dev);
      if (s.D_skip.defined()) dD = Tensor::empty({D}, wdt, dev);
      if (s.delta_bias.defined()) dbias = Tensor::empty({D}, wdt, dev);
      if (s.initial_state.defined()) dinit = Tensor::empty({B, D, N}, wdt, dev);
      kernels::SelectiveScanParams p = params_for(s, softplus);
      p.dy = gy.data_ptr();
      p.dlast_state = ptr(gS);
      p.tile_states = mut_ptr(tile_states);
      bind_grads(p, du, ddelta, dz, dA, dBm, dCm, dD, dbias, dinit);
      kernels::selective_scan_bwd_cuda(p);
      dBm = dBm.to(dt);
      dCm = dCm.to(dt);
    });
  }
  return {du, ddelta, dA, dBm, dCm, dD, dz, dbias, dinit};
}

}  // namespace

SelectiveScanOut selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias,
                                bool delta_softplus, const Tensor& initial_state, const Tensor& mask) {
  validate(u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask);
  ScanInputs s{
      contig(u),          contig(delta),         contig(A),   contig(Bm), contig(Cm), contig(D_skip), contig(z),
      contig(delta_bias), contig(initial_state), contig(mask)};
  const DType dt = u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = u.device();
  const int64_t B = u.size(0), D = u.size(2), N = Bm.size(2);

  const bool grad = any_requires_grad({&u, &delta, &A, &Bm, &Cm, &D_skip, &z, &delta_bias, &initial_state});
  SelectiveScanOut out;
  out.last_state = Tensor::empty({B, D, N}, wdt, dev);
  Tensor tile_states;  // CUDA with a tape: written by the forward, read by the backward (1/16 of all states)
  if (dev.is_cpu()) {
    const ScanInputs c = cpu_compute(s);
    Tensor y = Tensor::empty(u.shape(), c.u.dtype());
    kernels::SelectiveScanParams p = params_for(c, delta_softplus);
    p.y = y.data_ptr();
    p.last_state = out.last_state.data_ptr();
    kernels::selective_scan_fwd_cpu(p);
    out.y = y.dtype() == dt ? y : y.to(dt);
  } else {
    MT_CUDA_ONLY(kOp, {
      out.y = Tensor::empty(u.shape(), dt, dev);
      kernels::SelectiveScanParams p = params_for(s, delta_softplus);
      p.y = out.y.data_ptr();
      p.last_state = out.last_state.data_ptr();
      if (grad) {
        tile_states = Tensor::empty({kernels::selective_scan_tile_states_numel_cuda(p)}, wdt, dev);
        p.tile_states = tile_states.data_ptr();
      }
      kernels::selective_scan_fwd_cuda(p);
    });
  }

  if (grad) {
    auto node = make_lambda_node(kOp, [s, delta_softplus, tile_states](const std::vector<Tensor>& g) {
      return scan_backward(s, delta_softplus, g[0], g[1], tile_states);
    });
    record_node(node, {u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state}, {out.y, out.last_state});
  }
  return out;
}

}  // namespace mt
