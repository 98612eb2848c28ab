// rms_norm / layer_norm (plain and with the fused residual add): validation, device dispatch and the tape node
// (kernels in kernels/norm.h). The node saves the normalised input r (residual_out, or x for the plain norm) and
// the per-row statistics; backward recomputes n = (r - mean) * rstd from them.
#include "autograd/ops/norm.h"

#include <cmath>

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "kernels/norm.h"

namespace mt {

namespace {

const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

// Compute dtype of statistics and of the residual stream for input x.
DType compute_dtype(const Tensor& x) { return x.dtype() == DType::F64 ? DType::F64 : DType::F32; }

void validate(const char* op, const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
              double eps, DType out_dtype) {
  ops::check_float(op, "x", x);
  MT_CHECK_SHAPE(x.dim() >= 1 && x.size(-1) >= 1, op, ": x must have a non-empty last dimension, got ", x.describe());
  const int64_t H = x.size(-1);
  ops::check_float(op, "weight", weight);
  MT_CHECK_SHAPE(weight.dim() == 1 && weight.size(0) == H, op, ": weight must be [", H, "] (x's last dimension), got ",
                 weight.describe());
  MT_CHECK_SHAPE(weight.dtype() == DType::F32 || weight.dtype() == DType::F64, op, ": weight must be f32 or f64, got ",
                 weight.describe());
  MT_CHECK_SHAPE(weight.device() == x.device(), op, ": weight ", weight.describe(), " and x ", x.describe(),
                 " are on different devices");
  if (bias.defined()) {
    ops::check_float(op, "bias", bias);
    MT_CHECK_SHAPE(bias.dim() == 1 && bias.size(0) == H, op, ": bias must be [", H, "], got ", bias.describe());
    ops::check_same(op, {&weight, &bias});
  }
  if (residual.defined()) {
    ops::check_float(op, "residual", residual);
    const DType rd = compute_dtype(x);
    MT_CHECK_SHAPE(residual.shape() == x.shape(), op, ": residual must have x's shape ", shape_str(x.shape()), ", got ",
                   residual.describe());
    MT_CHECK_SHAPE(residual.dtype() == rd, op, ": residual must be ", dtype_name(rd), " for x ", x.describe(),
                   " (the residual stream is kept in f32, f64 for f64 x), got ", residual.describe());
    MT_CHECK_SHAPE(residual.device() == x.device(), op, ": residual ", residual.describe(), " and x ", x.describe(),
                   " are on different devices");
  }
  MT_CHECK_SHAPE(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  MT_CHECK_SHAPE(is_floating(out_dtype), op, ": out_dtype must be a float dtype, got ", dtype_name(out_dtype));
}

// fused: also produce residual_out = x + residual (and differentiate through it).
NormOut norm_impl(const char* op, bool rms, bool fused, const Tensor& x_in, const Tensor& res_in, const Tensor& w_in,
                  const Tensor& b_in, double eps, DType out_dtype) {
  validate(op, x_in, res_in, w_in, b_in, eps, out_dtype);
  const Tensor x = x_in.contiguous(), res = contig(res_in), weight = w_in.contiguous(), bias = contig(b_in);
  const Shape shape = x.shape();
  const int64_t H = x.size(-1), rows = x.numel() / H;
  const DType ct = compute_dtype(x);
  const Device dev = x.device();
  const bool need_grad = any_requires_grad({&x_in, &res_in, &w_in, &b_in});

  // The CPU kernels take every buffer in the compute dtype ct; CUDA reads x, weight, bias and writes y as they are.
  const ops::Dispatch d(op, dev, ct);
  const Tensor xc = d.input(x), wc = d.input(weight), bc = d.input(bias);
  NormOut out;
  Tensor mean, rstd;
  const Tensor y = d.output(shape, out_dtype);
  if (fused) out.residual = Tensor::empty(shape, ct, dev);
  if (need_grad) {
    rstd = Tensor::empty({rows}, ct, dev);
    if (!rms) mean = Tensor::empty({rows}, ct, dev);
  }
  kernels::NormFwdParams p;
  p.rows = rows, p.H = H, p.rms = rms, p.eps = eps;
  p.x = xc.data_ptr(), p.x_dtype = d.kernel_dtype(x.dtype()), p.residual = ptr(res);
  p.weight = wc.data_ptr(), p.bias = ptr(bc), p.w_dtype = d.kernel_dtype(weight.dtype());
  p.y = y.data_ptr(), p.y_dtype = d.kernel_dtype(out_dtype), p.residual_out = mut_ptr(out.residual);
  p.mean = mut_ptr(mean), p.rstd = mut_ptr(rstd);
  d.run(kernels::norm_fwd_cpu, MT_CUDA_KERNEL(norm_fwd_cuda), p);
  out.y = d.result(y, out_dtype);

  if (need_grad) {
    const bool need_x = requires_grad(x_in), need_r = requires_grad(res_in), need_w = requires_grad(w_in),
               need_b = requires_grad(b_in);
    const Tensor r = fused ? out.residual.detach() : x.detach();
    const DType x_dtype = x.dtype();
    auto node = make_lambda_node(
        op,
        [op, r, mean, rstd, weight = weight.detach(), rms, fused, rows, H, shape, ct, x_dtype, need_x, need_r, need_w,
         need_b](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          const Device dev = r.device();
          const DType wd = weight.dtype();
          const Tensor dy = g[0].contiguous();
          const Tensor dres_out = (fused && g[1].defined()) ? g[1].to(ct).contiguous() : Tensor();
          const ops::Dispatch d(op, dev, ct);
          const Tensor rc = d.input(r), wc = d.input(weight), dyc = d.input(dy);
          Tensor dx = need_x ? d.output(shape, x_dtype) : Tensor();
          Tensor dres = need_r ? Tensor::empty(shape, ct, dev) : Tensor();
          Tensor dw = need_w ? d.output({H}, wd) : Tensor();
          Tensor db = need_b ? d.output({H}, wd) : Tensor();
          kernels::NormBwdParams q;
          q.rows = rows, q.H = H, q.rms = rms;
          q.r = rc.data_ptr(), q.r_dtype = d.kernel_dtype(r.dtype()), q.mean = ptr(mean), q.rstd = rstd.data_ptr();
          q.weight = wc.data_ptr(), q.w_dtype = d.kernel_dtype(wd), q.dy = dyc.data_ptr();
          q.dy_dtype = d.kernel_dtype(dy.dtype()), q.d_residual_out = ptr(dres_out);
          q.dx = mut_ptr(dx), q.dx_dtype = d.kernel_dtype(x_dtype), q.d_residual = mut_ptr(dres);
          q.dweight = mut_ptr(dw), q.dbias = mut_ptr(db);
          d.run(kernels::norm_bwd_cpu, MT_CUDA_KERNEL(norm_bwd_cuda), q);
          dx = d.result(dx, x_dtype);
          dw = d.result(dw, wd);
          db = d.result(db, wd);
          if (fused) return {dx, dres, dw, db};
          return {dx, dw, db};
        });
    if (fused)
      record_node(node, {x_in, res_in, w_in, b_in}, {out.y, out.residual});
    else
      record_node(node, {x_in, w_in, b_in}, {out.y});
  }
  return out;
}

}  // namespace

NormOut rms_norm_residual(const Tensor& x, const Tensor& residual, const Tensor& weight, double eps, DType out_dtype) {
  return norm_impl("rms_norm_residual", true, true, x, residual, weight, Tensor(), eps, out_dtype);
}

NormOut layer_norm_residual(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                            double eps, DType out_dtype) {
  return norm_impl("layer_norm_residual", false, true, x, residual, weight, bias, eps, out_dtype);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  if (x.defined() && is_floating(x.dtype()))
    return norm_impl("rms_norm", true, false, x, Tensor(), weight, Tensor(), eps, x.dtype()).y;
  ops::check_float("rms_norm", "x", x);
  return Tensor();
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  if (x.defined() && is_floating(x.dtype()))
    return norm_impl("layer_norm", false, false, x, Tensor(), weight, bias, eps, x.dtype()).y;
  ops::check_float("layer_norm", "x", x);
  return Tensor();
}

}  // namespace mt
