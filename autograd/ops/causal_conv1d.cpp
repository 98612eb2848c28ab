// causal_conv1d: validation, device dispatch and the tape node (kernels in kernels/causal_conv1d.h).
#include "autograd/ops/causal_conv1d.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "kernels/causal_conv1d.h"

namespace mt {

namespace {

constexpr const char* kOp = "causal_conv1d";

const void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void validate(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& init, const Tensor& reset,
              bool reverse) {
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
  MT_CHECK_SHAPE(!(reverse && init.defined()), kOp, ": the reverse conv takes no initial_state");
  if (init.defined()) {
    ops::check_float(kOp, "initial_state", init);
    MT_CHECK_SHAPE(init.shape() == (Shape{B, K - 1, D}), kOp,
                   ": initial_state must be [B, K-1, D] = ", shape_str({B, K - 1, D}), ", got ", init.describe());
    ops::check_same(kOp, {&x, &init});
  }
  if (reset.defined())
    MT_CHECK_SHAPE(
        reset.shape() == (Shape{B, x.size(1)}) && reset.dtype() == DType::I32 && reset.device() == x.device(), kOp,
        ": reset must be i32[", B, ", ", x.size(1), "] on ", x.device().str(), ", got ", reset.describe());
}

const int32_t* reset_ptr(const Tensor& r) { return r.defined() ? r.data<int32_t>() : nullptr; }

}  // namespace

CausalConv1dOut causal_conv1d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Tensor& init_in,
                              bool apply_silu, const Tensor& reset_in, bool reverse) {
  validate(x_in, weight_in, bias_in, init_in, reset_in, reverse);
  const Tensor reset = reset_in.defined() ? reset_in.contiguous() : Tensor();
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  const Tensor init = init_in.defined() ? init_in.contiguous() : Tensor();
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(1);

  // The CPU kernels compute in f32 (f64 for f64 x): every input converted to that dtype, weight and bias included.
  const ops::Dispatch d(kOp, x);
  const Tensor xc = d.input(x), wc = d.input(weight), bc = d.input(bias), ic = d.input(init);
  const Tensor y = d.output({B, L, D}, x.dtype());
  const Tensor fin = reverse ? Tensor() : d.output({B, K - 1, D}, x.dtype());
  kernels::CausalConv1dFwdParams p;
  p.B = B, p.L = L, p.D = D, p.K = K, p.silu = apply_silu;
  p.dtype = d.kernel_dtype(x.dtype()), p.w_dtype = d.kernel_dtype(weight.dtype());
  p.x = xc.data_ptr(), p.weight = wc.data_ptr(), p.bias = ptr(bc), p.initial_state = ptr(ic);
  p.reset = reset_ptr(reset);
  p.reverse = reverse;
  p.y = y.data_ptr(), p.final_state = mut_ptr(fin);
  d.run(kernels::causal_conv1d_fwd_cpu, MT_CUDA_KERNEL(causal_conv1d_fwd_cuda), p);
  CausalConv1dOut out;
  out.y = d.result(y, x.dtype());
  if (!reverse) out.final_state = d.result(fin, x.dtype());

  if (any_requires_grad({&x_in, &weight_in, &bias_in, &init_in})) {
    const bool need_x = requires_grad(x_in), need_w = requires_grad(weight_in), need_b = requires_grad(bias_in),
               need_i = requires_grad(init_in);
    auto node = make_lambda_node(
        "causal_conv1d",
        [x = x.detach(), weight = weight.detach(), bias = bias.defined() ? bias.detach() : Tensor(),
         init = init.defined() ? init.detach() : Tensor(), reset, reverse, apply_silu, need_x, need_w, need_b,
         need_i](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(1);
          const Device dev = x.device();
          const Tensor dy = g[0].defined() ? g[0].to(x.dtype()).contiguous() : Tensor::zeros({B, L, D}, x.dtype(), dev);
          const Tensor dfin = g.size() > 1 && g[1].defined() ? g[1].to(x.dtype()).contiguous() : Tensor();
          const ops::Dispatch d(kOp, x);
          const Tensor xc = d.input(x), wc = d.input(weight), bc = d.input(bias), ic = d.input(init);
          const Tensor dyc = d.input(dy), dfc = d.input(dfin);
          Tensor dx = need_x ? d.output({B, L, D}, x.dtype()) : Tensor();
          Tensor dw = need_w ? d.output({D, K}, weight.dtype()) : Tensor();
          Tensor db = need_b ? d.output({D}, bias.dtype()) : Tensor();
          Tensor di = need_i ? d.output({B, K - 1, D}, init.dtype()) : Tensor();
          kernels::CausalConv1dBwdParams q;
          q.B = B, q.L = L, q.D = D, q.K = K, q.silu = apply_silu;
          q.dtype = d.kernel_dtype(x.dtype()), q.w_dtype = d.kernel_dtype(weight.dtype());
          q.x = xc.data_ptr(), q.weight = wc.data_ptr(), q.bias = ptr(bc), q.initial_state = ptr(ic);
          q.reset = reset_ptr(reset);
          q.reverse = reverse;
          q.dy = dyc.data_ptr(), q.d_final = ptr(dfc);
          q.dx = mut_ptr(dx), q.dweight = mut_ptr(dw), q.dbias = mut_ptr(db), q.d_initial_state = mut_ptr(di);
          d.run(kernels::causal_conv1d_bwd_cpu, MT_CUDA_KERNEL(causal_conv1d_bwd_cuda), q);
          if (need_x) dx = d.result(dx, x.dtype());
          if (need_w) dw = d.result(dw, weight.dtype());
          if (need_b) db = d.result(db, bias.dtype());
          if (need_i) di = d.result(di, init.dtype());
          return {dx, dw, db, di};
        });
    // The reverse conv has no final_state: y is the node's only output.
    record_node(node, {x_in, weight_in, bias_in, init_in},
                reverse ? std::vector<Tensor>{out.y} : std::vector<Tensor>{out.y, out.final_state});
  }
  return out;
}

}  // namespace mt
