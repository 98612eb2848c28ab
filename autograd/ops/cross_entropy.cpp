// log_softmax and cross_entropy: validation, device dispatch and the tape nodes (kernels in
// kernels/cross_entropy.h).
//
// Bad targets on CUDA: the kernel records the first bad row in a device flag (ops::bad_flag) and the op reads it
// back once per call, then fetches the offending target to name it in the mt::Error(Data).
#include "autograd/ops/cross_entropy.h"

#include "autograd/ops/op_util.h"
#include "kernels/cross_entropy.h"

namespace mt {

namespace {

DType compute_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// ---- log_softmax over the last dim of a contiguous tensor ----
Tensor ls_forward(const Tensor& xt) {
  const int64_t C = xt.dim() == 0 ? 1 : xt.size(-1);
  const int64_t R = C > 0 ? xt.numel() / C : 0;
  Tensor y = Tensor::empty(xt.shape(), xt.dtype(), xt.device());
  kernels::LogSoftmaxParams p;
  p.R = R;
  p.C = C;
  if (xt.device().is_cpu()) {
    Tensor xc = ops::as_cpu_compute(xt);
    Tensor yc = Tensor::empty(xt.shape(), xc.dtype(), xt.device());
    p.dtype = xc.dtype();
    p.x = xc.data_ptr();
    p.y = yc.data_ptr();
    kernels::log_softmax_fwd_cpu(p);
    if (!yc.same(y)) y.copy_(yc);
  } else {
    p.dtype = xt.dtype();
    p.x = xt.data_ptr();
    p.y = y.data_ptr();
    MT_CUDA_ONLY("log_softmax", kernels::log_softmax_fwd_cuda(p));
  }
  return y;
}

Tensor ls_backward(const Tensor& yt, const Tensor& gt) {
  const int64_t C = yt.dim() == 0 ? 1 : yt.size(-1);
  const int64_t R = C > 0 ? yt.numel() / C : 0;
  Tensor dx = Tensor::empty(yt.shape(), yt.dtype(), yt.device());
  kernels::LogSoftmaxParams p;
  p.R = R;
  p.C = C;
  if (yt.device().is_cpu()) {
    Tensor yc = ops::as_cpu_compute(yt);
    Tensor gc = ops::as_cpu_compute(gt.to(yt.dtype()).contiguous()).contiguous();
    Tensor dc = Tensor::empty(yt.shape(), yc.dtype(), yt.device());
    p.dtype = yc.dtype();
    p.y = yc.data_ptr();
    p.dy = gc.data_ptr();
    p.dx = dc.data_ptr();
    kernels::log_softmax_bwd_cpu(p);
    dx.copy_(dc);
  } else {
    Tensor gc = gt.to(yt.dtype()).contiguous();
    p.dtype = yt.dtype();
    p.y = yt.data_ptr();
    p.dy = gc.data_ptr();
    p.dx = dx.data_ptr();
    MT_CUDA_ONLY("log_softmax", kernels::log_softmax_bwd_cuda(p));
  }
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

  kernels::CrossEntropyParams p;
  p.target_dtype = t.dtype();
  p.N = N;
  p.C = C;
  p.ignore_index = ignore_index;
  p.targets = t.data_ptr();
  p.lse = lse.data_ptr();
  p.count = count.data_ptr();
  p.loss = loss.data_ptr();
  int64_t bad = -1;
  if (dev.is_cpu()) {
    Tensor xc = ops::as_cpu_compute(x);
    p.dtype = xc.dtype();
    p.logits = xc.data_ptr();
    bad = kernels::cross_entropy_fwd_cpu(p);
  } else {
    Tensor row_loss = Tensor::empty({N}, cd, dev);
    Tensor flag = ops::bad_flag(N, dev);
    p.dtype = x.dtype();
    p.logits = x.data_ptr();
    p.row_loss = row_loss.data_ptr();
    p.bad_row = flag.data<int64_t>();
    MT_CUDA_ONLY("cross_entropy", kernels::cross_entropy_fwd_cuda(p));
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
          kernels::CrossEntropyParams b;
          b.target_dtype = t.dtype();
          b.N = N;
          b.C = C;
          b.ignore_index = ignore_index;
          b.targets = t.data_ptr();
          b.lse = lse.data_ptr();
          b.count = count.data_ptr();
          b.grad_loss = gl.data_ptr();
          if (dev.is_cpu()) {
            Tensor xc = ops::as_cpu_compute(x);
            Tensor dxc = xc.same(x) ? dx : Tensor::empty({N, C}, xc.dtype(), dev);
            b.dtype = xc.dtype();
            b.logits = xc.data_ptr();
            b.grad_logits = dxc.data_ptr();
            kernels::cross_entropy_bwd_cpu(b);
            if (!dxc.same(dx)) dx.copy_(dxc);
          } else {
            b.dtype = x.dtype();
            b.logits = x.data_ptr();
            b.grad_logits = dx.data_ptr();
            MT_CUDA_ONLY("cross_entropy", kernels::cross_entropy_bwd_cuda(b));
          }
          return {dx, Tensor()};
        });
    record_node(node, {logits, targets}, {loss});
  }
  return loss;
}

}  // namespace mt
