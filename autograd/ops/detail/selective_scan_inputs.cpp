// What the selective-scan ops share for one direction of a scan (autograd/ops/detail/selective_scan_inputs.h).
#include "autograd/ops/detail/selective_scan_inputs.h"

#include "autograd/ops/op_util.h"

namespace mt::ops::scan {

namespace {

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

// Bm and Cm as the kernels read them: on CUDA, column blocks of one wider [B, L, W] tensor (x_proj's output, split
// into views) stay in place when they share a row stride; otherwise, and on the CPU, packed copies.
std::pair<Tensor, Tensor> bc_inputs(const Tensor& Bm, const Tensor& Cm) {
  auto rows = [](const Tensor& t) {
    const Shape& st = t.strides();
    return st[2] == 1 && st[1] >= t.size(2) && st[0] == t.size(1) * st[1] ? st[1] : int64_t{-1};
  };
  if (!Bm.device().is_cpu() && !Bm.is_contiguous() && rows(Bm) > 0 && rows(Bm) == rows(Cm)) return {Bm, Cm};
  return {Bm.contiguous(), Cm.contiguous()};
}
const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void check_weight(const char* kOp, const char* arg, const Tensor& t, const Shape& shape, DType wdt, const Tensor& u) {
  if (!t.defined()) return;
  MT_CHECK_SHAPE(t.shape() == shape && t.dtype() == wdt && t.device() == u.device(), kOp, ": ", arg, " must be ",
                 dtype_name(wdt), shape_str(shape), " on ", u.device().str(), " (", dtype_name(wdt), " because u is ",
                 dtype_name(u.dtype()), "), got ", t.describe());
}

}  // namespace

void validate(const char* kOp, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
              const Tensor& Cm, const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias,
              const Tensor& initial_state, const Tensor& mask, const Tensor& reset) {
  check_float(kOp, "u", u);
  check_float(kOp, "delta", delta);
  check_float(kOp, "A", A);
  check_float(kOp, "Bm", Bm);
  check_float(kOp, "Cm", Cm);
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
    check_float(kOp, "z", z);
    MT_CHECK_SHAPE(z.shape() == u.shape(), kOp, ": z must have u's shape ", shape_str(u.shape()), ", got ",
                   z.describe());
    same.push_back(&z);
  }
  check_same(kOp, same);
  const DType wdt = u.dtype() == DType::F64 ? DType::F64 : DType::F32;
  check_weight(kOp, "A", A, {D, N}, wdt, u);
  check_weight(kOp, "D_skip", D_skip, {D}, wdt, u);
  check_weight(kOp, "delta_bias", delta_bias, {D}, wdt, u);
  check_weight(kOp, "initial_state", initial_state, {B, D, N}, wdt, u);
  if (mask.defined())
    MT_CHECK_SHAPE(mask.shape() == Shape({B, L}) && mask.device() == u.device(), kOp, ": mask must be [B, L] = [", B,
                   ", ", L, "] on ", u.device().str(), ", got ", mask.describe());
  if (reset.defined())
    MT_CHECK_SHAPE(reset.shape() == Shape({B, L}) && reset.dtype() == DType::I32 && reset.device() == u.device(), kOp,
                   ": reset must be i32[", B, ", ", L, "] on ", u.device().str(), ", got ", reset.describe());
  MT_CHECK_SHAPE(u.device().is_cpu() || N <= kernels::kSelectiveScanCudaMaxN, kOp,
                 ": the CUDA kernel supports N <= ", kernels::kSelectiveScanCudaMaxN, ", got N = ", N);
}

ScanInputs make_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                       const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias, const Tensor& initial_state,
                       const Tensor& mask, const Tensor& reset) {
  const std::pair<Tensor, Tensor> bc = bc_inputs(Bm, Cm);
  return ScanInputs{
      contig(u),          contig(delta),         contig(A),    bc.first,     bc.second, contig(D_skip), contig(z),
      contig(delta_bias), contig(initial_state), contig(mask), contig(reset)};
}

kernels::SelectiveScanParams params_for(const ScanInputs& s, bool softplus, bool reverse) {
  kernels::SelectiveScanParams p;
  p.reverse = reverse;
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
  if (!s.Bm.is_contiguous()) p.bc_stride = s.Bm.strides()[1];
  p.D_skip = ptr(s.D_skip);
  p.z = ptr(s.z);
  p.delta_bias = ptr(s.delta_bias);
  p.initial_state = ptr(s.initial_state);
  p.mask = ptr(s.mask);
  if (s.mask.defined()) p.mask_dtype = s.mask.dtype();
  p.reset = s.reset.defined() ? s.reset.data<int32_t>() : nullptr;
  return p;
}

ScanInputs kernel_inputs(const Dispatch& d, const ScanInputs& s) {
  ScanInputs c = s;
  c.u = d.input(s.u);
  c.delta = d.input(s.delta);
  c.Bm = d.input(s.Bm);
  c.Cm = d.input(s.Cm);
  c.z = d.input(s.z);
  return c;
}

ScanGrads bind_grads(const Dispatch& d, const ScanInputs& s, kernels::SelectiveScanParams& p) {
  const DType dt = s.u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = s.u.device();
  const int64_t B = s.u.size(0), L = s.u.size(1), D = s.u.size(2), N = s.Bm.size(2);
  ScanGrads g;
  g.du = d.output(s.u.shape(), dt);
  g.ddelta = d.output(s.u.shape(), dt);
  if (s.z.defined()) g.dz = d.output(s.u.shape(), dt);
  g.dA = Tensor::empty({D, N}, wdt, dev);
  // dB and dC are summed over the channels in the compute dtype on both devices and stored in u's dtype: by the CUDA
  // kernel itself, from the CPU kernel's compute-dtype result in grad_results.
  const DType bc_dt = d.cpu() ? wdt : dt;
  g.dBm = Tensor::empty({B, L, N}, bc_dt, dev);
  g.dCm = Tensor::empty({B, L, N}, bc_dt, dev);
  if (s.D_skip.defined()) g.dD = Tensor::empty({D}, wdt, dev);
  if (s.delta_bias.defined()) g.dbias = Tensor::empty({D}, wdt, dev);
  if (s.initial_state.defined()) g.dinit = Tensor::empty({B, D, N}, wdt, dev);
  p.du = g.du.data_ptr();
  p.ddelta = g.ddelta.data_ptr();
  p.dz = mut_ptr(g.dz);
  p.dA = g.dA.data_ptr();
  p.dBm = g.dBm.data_ptr();
  p.dCm = g.dCm.data_ptr();
  p.dD_skip = mut_ptr(g.dD);
  p.ddelta_bias = mut_ptr(g.dbias);
  p.dinitial_state = mut_ptr(g.dinit);
  return g;
}

ScanGrads grad_results(const Dispatch& d, const ScanGrads& g, DType dt) {
  ScanGrads r = g;
  r.du = d.result(g.du, dt);
  r.ddelta = d.result(g.ddelta, dt);
  r.dz = d.result(g.dz, dt);
  r.dBm = d.result(g.dBm, dt);
  r.dCm = d.result(g.dCm, dt);
  return r;
}

Tensor grad_input(const Tensor& gy, const ScanInputs& s) {
  const DType dt = s.u.dtype();
  return gy.defined() ? gy.to(s.u.device()).to(dt).contiguous() : Tensor::zeros(s.u.shape(), dt, s.u.device());
}

Tensor state_grad_input(const Tensor& gS, const ScanInputs& s) {
  const DType wdt = s.u.dtype() == DType::F64 ? DType::F64 : DType::F32;
  return gS.defined() ? gS.to(s.u.device()).to(wdt).contiguous() : Tensor();
}

}  // namespace mt::ops::scan
