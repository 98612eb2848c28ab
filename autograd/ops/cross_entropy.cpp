// log_softmax and cross_entropy: validation, device dispatch and the tape nodes (kernels in
// kernels/cross_entropy.h).
//
// Bad targets on CUDA: the kernel records the first bad row in a device flag (ops::bad_flag) and the op reads it
// back once per call, then fetches the offending target to name it in the mt::Error(Data).
#include "autograd/ops/cross_entropy.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "kernels/cross_entropy.h"

namespace mt {

namespace {

// The loss dtype (f32, f64 for f64 logits) on either device.
DType compute_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// ---- log_softmax over the last dim of a contiguous tensor ----
Tensor ls_forward(const Tensor& xt) {
  const int64_t C = xt.dim() == 0 ? 1 : xt.size(-1);
  const int64_t R = C > 0 ? xt.numel() / C : 0;
  const ops::Dispatch d("log_softmax", xt);
  const Tensor xc = d.input(xt);
  Tensor y = Tensor::empty(xt.shape(), xt.dtype(), xt.device());
  const Tensor yc = d.output_into(y);
  kernels::LogSoftmaxParams p;
  p.R = R;
  p.C = C;
  p.dtype = d.kernel_dtype(xt.dtype());
  p.x = xc.data_ptr();
  p.y = yc.data_ptr();
  d.run(kernels::log_softmax_fwd_cpu, MT_CUDA_KERNEL(log_softmax_fwd_cuda), p);
  d.write_back(yc, y);
  return y;
}

Tensor ls_backward(const Tensor& yt, const Tensor& gt) {
  const int64_t C = yt.dim() == 0 ? 1 : yt.size(-1);
  const int64_t R = C > 0 ? yt.numel() / C : 0;
  const ops::Dispatch d("log_softmax", yt);
  const Tensor yc = d.input(yt), gc = d.input(gt.to(yt.dtype()).contiguous()).contiguous();
  Tensor dx = Tensor::empty(yt.shape(), yt.dtype(), yt.device());
  const Tensor dc = d.output_into(dx);
  kernels::LogSoftmaxParams p;
  p.R = R;
  p.C = C;
  p.dtype = d.kernel_dtype(yt.dtype());
  p.y = yc.data_ptr();
  p.dy = gc.data_ptr();
  p.dx = dc.data_ptr();
  d.run(kernels::log_softmax_bwd_cpu, MT_CUDA_KERNEL(log_softmax_bwd_cuda), p);
  d.write_back(dc, dx);
  return dx;
}

// t with dims d and last swapped (a view), or t itself when d is last.
Tensor move_last(const Tensor& t, int64_t d) {
  const int64_t last = t.dim() - 1;
  if (t.dim() == 0 || d == last) return t;
  Shape sh = t.shape(), st = t.strides();
  std::swap(sh[d], sh[last]);
  std::swap(st[d], st[last]);
  return t.as_strided(sh, st, t.offset());
}

// The packed tensor of shape `shape` whose dim-d/last-swapped view equals src (src has the swapped shape).
Tensor move_back(const Tensor& src, int64_t d, const Shape& shape) {
  if (src.dim() == 0 || d == src.dim() - 1) return src;
  Tensor out = Tensor::empty(shape, src.dtype(), src.device());
  move_last(out, d).copy_(src);
  return out;
}

// What the cross_entropy forward and backward kernels share: sizes, targets, the rows' log-sum-exps and the count
// of scored rows.
kernels::CrossEntropyParams shared_params(const Tensor& t, int64_t N, int64_t C, int64_t ignore_index,
                                          const Tensor& lse, const Tensor& count) {
  kernels::CrossEntropyParams p;
  p.target_dtype = t.dtype();
  p.N = N;
  p.C = C;
  p.ignore_index = ignore_index;
  p.targets = t.data_ptr();
  p.lse = lse.data_ptr();
  p.count = count.data_ptr();
  return p;
}

}  // namespace

Tensor log_softmax(const Tensor& x, int64_t dim) {
  ops::check_float("log_softmax", "x", x);
  const int64_t d = ops::wrap_dim("log_softmax", dim, x.dim());
  Tensor xt = move_last(x, d).contiguous();
  Tensor yt = ls_forward(xt);
  Tensor out = move_back(yt, d, x.shape());
  if (out.same(x)) out = out.detach();  // never hand back an input object
  if (any_requires_grad({&x})) {
    const Shape shape = x.shape();
    auto node = make_lambda_node("log_softmax", [yt, d, shape](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      Tensor gt = move_last(g[0], d).contiguous();
      return {move_back(ls_backward(yt, gt), d, shape)};
    });
    // out may alias yt (dim is last): the node keeps yt, so the output must be its own TensorImpl.
    if (out.same(yt)) out = yt.detach();
    record_node(node, {x}, {out});
  }
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  ops::check_float("cross_entropy", "logits", logits);
  ops::check_index("cross_entropy", "targets", targets);
  MT_CHECK_SHAPE(logits.dim() == 2 && logits.size(1) >= 1, "cross_entropy: logits must be [N, C] with C >= 1, got ",
                 logits.describe());
  const int64_t N = logits.size(0), C = logits.size(1);
  MT_CHECK_SHAPE(targets.dim() == 1 && targets.size(0) == N, "cross_entropy: targets must be [", N, "] for logits ",
                 shape_str(logits.shape()), ", got ", targets.describe());
  MT_CHECK_SHAPE(targets.device() == logits.device(), "cross_entropy: targets ", targets.describe(), " and logits ",
                 logits.describe(), " are on different devices");
  const DType cd = compute_dtype(logits.dtype());
  const Device dev = logits.device();
  Tensor x = logits.contiguous(), t = targets.contiguous();
  Tensor lse = Tensor::empty({N}, cd, dev), count = Tensor::empty({}, cd, dev), loss = Tensor::empty({}, cd, dev);

  kernels::CrossEntropyParams p = shared_params(t, N, C, ignore_index, lse, count);
  p.loss = loss.data_ptr();
  const ops::Dispatch d("cross_entropy", x);
  const Tensor xc = d.input(x);
  p.dtype = d.kernel_dtype(x.dtype());
  p.logits = xc.data_ptr();
  int64_t bad = -1;
  if (d.cpu()) {
    bad = kernels::cross_entropy_fwd_cpu(p);  // returns the first bad row
  } else {                                    // records it in a device flag, beside per-row losses
    Tensor row_loss = Tensor::empty({N}, cd, dev);
    Tensor flag = ops::bad_flag(N, dev);
    p.row_loss = row_loss.data_ptr();
    p.bad_row = flag.data<int64_t>();
    ops::run_cuda(d.op(), MT_CUDA_KERNEL(cross_entropy_fwd_cuda), p);
    bad = ops::read_flag(flag, N);
  }
  if (bad >= 0)
    throw Error(ErrorKind::Data,
                str("cross_entropy: target ", ops::element_i64(t, bad), " in row ", bad, " is outside [0, ", C,
                    ") (logits ", logits.describe(), ", ignore_index ", ignore_index, ")"));

  if (any_requires_grad({&logits})) {
    auto node = make_lambda_node(
        "cross_entropy",
        [x, t, lse, count, ignore_index, N, C, cd, dev](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          Tensor gl = g[0].to(cd).contiguous();
          Tensor dx = Tensor::empty({N, C}, x.dtype(), dev);
          kernels::CrossEntropyParams b = shared_params(t, N, C, ignore_index, lse, count);
          b.grad_loss = gl.data_ptr();
          const ops::Dispatch d("cross_entropy", x);
          const Tensor xc = d.input(x), dxc = d.output_into(dx);
          b.dtype = d.kernel_dtype(x.dtype());
          b.logits = xc.data_ptr();
          b.grad_logits = dxc.data_ptr();
          d.run(kernels::cross_entropy_bwd_cpu, MT_CUDA_KERNEL(cross_entropy_bwd_cuda), b);
          d.write_back(dxc, dx);
          return {dx, Tensor()};
        });
    record_node(node, {logits, targets}, {loss});
  }
  return loss;
}

}  // namespace mt
