// Differentiable selective scan: validation, device dispatch and the tape node (math in kernels/selective_scan.h).
//
// The node saves only the (contiguous) inputs; the backward kernels recompute the states. Gradients: du, ddelta,
// dz, dBm, dCm in the storage dtype of u; dA, dD_skip, ddelta_bias, dinitial_state in f32 (f64 for f64 inputs).
#include "autograd/ops/selective_scan.h"

#include "autograd/autograd.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "kernels/selective_scan.h"

namespace mt {

namespace {

constexpr const char* kOp = "selective_scan";

// The inputs of one call, contiguous (optional ones undefined when absent).
struct ScanInputs {
  Tensor u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask, reset;
};

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

void check_weight(const char* arg, const Tensor& t, const Shape& shape, DType wdt, const Tensor& u) {
  if (!t.defined()) return;
  MT_CHECK_SHAPE(t.shape() == shape && t.dtype() == wdt && t.device() == u.device(), kOp, ": ", arg, " must be ",
                 dtype_name(wdt), shape_str(shape), " on ", u.device().str(), " (", dtype_name(wdt), " because u is ",
                 dtype_name(u.dtype()), "), got ", t.describe());
}

// Throws mt::Error(Shape) naming the offending argument.
void validate(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
              const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias, const Tensor& initial_state,
              const Tensor& mask, const Tensor& reset) {
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
  if (reset.defined())
    MT_CHECK_SHAPE(reset.shape() == Shape({B, L}) && reset.dtype() == DType::I32 && reset.device() == u.device(), kOp,
                   ": reset must be i32[", B, ", ", L, "] on ", u.device().str(), ", got ", reset.describe());
  MT_CHECK_SHAPE(u.device().is_cpu() || N <= kernels::kSelectiveScanCudaMaxN, kOp,
                 ": the CUDA kernel supports N <= ", kernels::kSelectiveScanCudaMaxN, ", got N = ", N);
}

// Pointers and sizes of the inputs (already in the dtype the kernel reads).
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

// The inputs as the kernels read them: the CPU's are f32 / f64, so bf16 / f16 activations go through f32 copies
// there (the weights are f32 already).
ScanInputs kernel_inputs(const ops::Dispatch& d, const ScanInputs& s) {
  ScanInputs c = s;
  c.u = d.input(s.u);
  c.delta = d.input(s.delta);
  c.Bm = d.input(s.Bm);
  c.Cm = d.input(s.Cm);
  c.z = d.input(s.z);
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
std::vector<Tensor> scan_backward(const ScanInputs& s, bool softplus, bool reverse, const Tensor& gy_in,
                                  const Tensor& gS_in, const Tensor& tile_states) {
  const DType dt = s.u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = s.u.device();
  const int64_t B = s.u.size(0), L = s.u.size(1), D = s.u.size(2), N = s.Bm.size(2);
  Tensor gy = gy_in.defined() ? gy_in.to(dev).to(dt).contiguous() : Tensor::zeros(s.u.shape(), dt, dev);
  Tensor gS = gS_in.defined() ? gS_in.to(dev).to(wdt).contiguous() : Tensor();

  const ops::Dispatch d(kOp, s.u);
  const ScanInputs k = kernel_inputs(d, s);
  const Tensor gyc = d.input(gy);
  Tensor du = d.output(s.u.shape(), dt), ddelta = d.output(s.u.shape(), dt);
  Tensor dz = s.z.defined() ? d.output(s.u.shape(), dt) : Tensor();
  Tensor dA = Tensor::empty({D, N}, wdt, dev);
  // dB and dC are summed over the channels in the compute dtype on both devices and stored in u's dtype: by the CUDA
  // kernel itself, from the CPU kernel's compute-dtype result here.
  const DType bc_dt = d.cpu() ? wdt : dt;
  Tensor dBm = Tensor::empty({B, L, N}, bc_dt, dev), dCm = Tensor::empty({B, L, N}, bc_dt, dev);
  Tensor dD = s.D_skip.defined() ? Tensor::empty({D}, wdt, dev) : Tensor();
  Tensor dbias = s.delta_bias.defined() ? Tensor::empty({D}, wdt, dev) : Tensor();
  Tensor dinit = s.initial_state.defined() ? Tensor::empty({B, D, N}, wdt, dev) : Tensor();
  kernels::SelectiveScanParams p = params_for(k, softplus, reverse);
  p.dy = gyc.data_ptr();
  p.dlast_state = ptr(gS);
  p.tile_states = mut_ptr(tile_states);
  bind_grads(p, du, ddelta, dz, dA, dBm, dCm, dD, dbias, dinit);
  d.run(kernels::selective_scan_bwd_cpu, MT_CUDA_KERNEL(selective_scan_bwd_cuda), p);
  du = d.result(du, dt);
  ddelta = d.result(ddelta, dt);
  dz = d.result(dz, dt);
  dBm = d.result(dBm, dt);
  dCm = d.result(dCm, dt);
  return {du, ddelta, dA, dBm, dCm, dD, dz, dbias, dinit};
}

}  // namespace

SelectiveScanOut selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& D_skip, const Tensor& z, const Tensor& delta_bias,
                                bool delta_softplus, const Tensor& initial_state, const Tensor& mask,
                                const Tensor& reset, bool reverse) {
  validate(u, delta, A, Bm, Cm, D_skip, z, delta_bias, initial_state, mask, reset);
  const std::pair<Tensor, Tensor> bc = bc_inputs(Bm, Cm);
  ScanInputs s{
      contig(u),          contig(delta),         contig(A),    bc.first,     bc.second, contig(D_skip), contig(z),
      contig(delta_bias), contig(initial_state), contig(mask), contig(reset)};
  const DType dt = u.dtype();
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = u.device();
  const int64_t B = u.size(0), D = u.size(2), N = Bm.size(2);

  const bool grad = any_requires_grad({&u, &delta, &A, &Bm, &Cm, &D_skip, &z, &delta_bias, &initial_state});
  SelectiveScanOut out;
  out.last_state = Tensor::empty({B, D, N}, wdt, dev);
  const ops::Dispatch d(kOp, u);
  const ScanInputs k = kernel_inputs(d, s);
  const Tensor y = d.output(u.shape(), dt);
  kernels::SelectiveScanParams p = params_for(k, delta_softplus, reverse);
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
