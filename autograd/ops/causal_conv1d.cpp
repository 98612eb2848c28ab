// causal_conv1d: validation, device dispatch and the tape node (kernels in kernels/causal_conv1d.h).
#include "autograd/ops/causal_conv1d.h"

#include "autograd/ops/op_util.h"
#include "kernels/causal_conv1d.h"

namespace mt {

namespace {

constexpr const char* kOp = "causal_conv1d";

// Dtype the CPU kernel runs in for these inputs.
DType cpu_compute_dtype(const Tensor& x) { return x.dtype() == DType::F64 ? DType::F64 : DType::F32; }

// t converted for the CPU kernel (undefined stays undefined). Contiguous on return.
Tensor to_cpu(const Tensor& t, DType ct) { return t.defined() ? t.to(ct).contiguous() : Tensor(); }

const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void validate(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& init) {
  ops::check_float(kOp, "x", x);
  ops::check_float(kOp, "weight", weight);
  MT_CHECK_SHAPE(x.dim() == 3 && x.size(0) >= 1 && x.size(1) >= 1 && x.size(2) >= 1, kOp,
                 ": x must be [B, L, D] with B, L, D >= 1, got ", x.describe());
  const int64_t B = x.size(0), D = x.size(2);
  MT_CHECK_SHAPE(weight.dim() == 2 && weight.size(0) == D && weight.size(1) >= 1, kOp, ": weight must be [D, K] = [", D,
                 ", K] with K >= 1 (reshape a [D, 1, K] Conv1d weight first), got ", weight.describe());
  const int64_t K = weight.size(1);
  MT_CHECK_SHAPE(weight.dtype() == x.dtype() || weight.dtype() == DType::F32, kOp, ": weight must be ",
                 dtype_name(x.dtype()), " (x's dtype) or f32, got ", weight.describe());
  MT_CHECK_SHAPE(weight.device() == x.device(), kOp, ": weight ", weight.describe(), " and x ", x.describe(),
                 " are on different devices");
  if (bias.defined()) {
    ops::check_float(kOp, "bias", bias);
    MT_CHECK_SHAPE(bias.dim() == 1 && bias.size(0) == D, kOp, ": bias must be [", D, "], got ", bias.describe());
    ops::check_same(kOp, {&weight, &bias});
  }
  if (init.defined()) {
    ops::check_float(kOp, "initial_state", init);
    MT_CHECK_SHAPE(init.shape() == (Shape{B, K - 1, D}), kOp,
                   ": initial_state must be [B, K-1, D] = ", shape_str({B, K - 1, D}), ", got ", init.describe());
    ops::check_same(kOp, {&x, &init});
  }
}

}  // namespace

CausalConv1dOut causal_conv1d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Tensor& init_in,
                              bool apply_silu) {
  validate(x_in, weight_in, bias_in, init_in);
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  const Tensor init = init_in.defined() ? init_in.contiguous() : Tensor();
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(1);
  const Device dev = x.device();

  CausalConv1dOut out;
  kernels::CausalConv1dFwdParams p;
  p.B = B, p.L = L, p.D = D, p.K = K, p.silu = apply_silu;
  if (dev.is_cpu()) {
    const DType ct = cpu_compute_dtype(x);
    const Tensor xc = to_cpu(x, ct), wc = to_cpu(weight, ct), bc = to_cpu(bias, ct), ic = to_cpu(init, ct);
    const Tensor yc = Tensor::empty({B, L, D}, ct), fc = Tensor::empty({B, K - 1, D}, ct);
    p.dtype = p.w_dtype = ct;
    p.x = xc.data_ptr(), p.weight = wc.data_ptr(), p.bias = ptr(bc), p.initial_state = ptr(ic);
    p.y = yc.data_ptr(), p.final_state = mut_ptr(fc);
    kernels::causal_conv1d_fwd_cpu(p);
    out.y = ops::from_cpu_compute(yc, x.dtype());
    out.final_state = ops::from_cpu_compute(fc, x.dtype());
  } else {
    MT_CUDA_ONLY(kOp, {
      out.y = Tensor::empty({B, L, D}, x.dtype(), dev);
      out.final_state = Tensor::empty({B, K - 1, D}, x.dtype(), dev);
      p.dtype = x.dtype(), p.w_dtype = weight.dtype();
      p.x = x.data_ptr(), p.weight = weight.data_ptr(), p.bias = ptr(bias), p.initial_state = ptr(init);
      p.y = out.y.data_ptr(), p.final_state = mut_ptr(out.final_state);
      kernels::causal_conv1d_fwd_cuda(p);
    });
  }

  if (any_requires_grad({&x_in, &weight_in, &bias_in, &init_in})) {
    const bool need_x = requires_grad(x_in), need_w = requires_grad(weight_in), need_b = requires_grad(bias_in),
               need_i = requires_grad(init_in);
    auto node = make_lambda_node(
        "causal_conv1d",
        [x = x.detach(), weight = weight.detach(), bias = bias.defined() ? bias.detach() : Tensor(),
         init = init.defined() ? init.detach() : Tensor(), apply_silu, need_x, need_w, need_b,
         need_i](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(1);
          const Device dev = x.device();
          const Tensor dy = g[0].defined() ? g[0].to(x.dtype()).contiguous() : Tensor::zeros({B, L, D}, x.dtype(), dev);
          const Tensor dfin = g[1].defined() ? g[1].to(x.dtype()).contiguous() : Tensor();
          kernels::CausalConv1dBwdParams q;
          q.B = B, q.L = L, q.D = D, q.K = K, q.silu = apply_silu;
          Tensor dx, dw, db, di;
          if (dev.is_cpu()) {
            const DType ct = cpu_compute_dtype(x);
            const Tensor xc = to_cpu(x, ct), wc = to_cpu(weight, ct), bc = to_cpu(bias, ct), ic = to_cpu(init, ct);
            const Tensor dyc = to_cpu(dy, ct), dfc = to_cpu(dfin, ct);
            const Tensor dxc = need_x ? Tensor::empty({B, L, D}, ct) : Tensor();
            const Tensor dwc = need_w ? Tensor::empty({D, K}, ct) : Tensor();
            const Tensor dbc = need_b ? Tensor::empty({D}, ct) : Tensor();
            const Tensor dic = need_i ? Tensor::empty({B, K - 1, D}, ct) : Tensor();
            q.dtype = q.w_dtype = ct;
            q.x = xc.data_ptr(), q.weight = wc.data_ptr(), q.bias = ptr(bc), q.initial_state = ptr(ic);
            q.dy = dyc.data_ptr(), q.d_final = ptr(dfc);
            q.dx = mut_ptr(dxc), q.dweight = mut_ptr(dwc), q.dbias = mut_ptr(dbc), q.d_initial_state = mut_ptr(dic);
            kernels::causal_conv1d_bwd_cpu(q);
            if (need_x) dx = ops::from_cpu_compute(dxc, x.dtype());
            if (need_w) dw = ops::from_cpu_compute(dwc, weight.dtype());
            if (need_b) db = ops::from_cpu_compute(dbc, bias.dtype());
            if (need_i) di = ops::from_cpu_compute(dic, init.dtype());
          } else {
            MT_CUDA_ONLY(kOp, {
              if (need_x) dx = Tensor::empty({B, L, D}, x.dtype(), dev);
              if (need_w) dw = Tensor::empty({D, K}, weight.dtype(), dev);
              if (need_b) db = Tensor::empty({D}, bias.dtype(), dev);
              if (need_i) di = Tensor::empty({B, K - 1, D}, init.dtype(), dev);
              q.dtype = x.dtype(), q.w_dtype = weight.dtype();
              q.x = x.data_ptr(), q.weight = weight.data_ptr(), q.bias = ptr(bias), q.initial_state = ptr(init);
              q.dy = dy.data_ptr(), q.d_final = ptr(dfin);
              q.dx = mut_ptr(dx), q.dweight = mut_ptr(dw), q.dbias = mut_ptr(db), q.d_initial_state = mut_ptr(di);
              kernels::causal_conv1d_bwd_cuda(q);
            });
          }
          return {dx, dw, db, di};
        });
    record_node(node, {x_in, weight_in, bias_in, init_in}, {out.y, out.final_state});
  }
  return out;
}

}  // namespace mt
