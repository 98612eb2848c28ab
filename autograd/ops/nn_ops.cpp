// embedding, log_softmax, cross_entropy and linear_cross_entropy: validation, device dispatch and the tape nodes,
// on top of kernels/embedding.h, kernels/softmax_xent.h and kernels/linear_xent.h (the math is written there).
//
// Error detection on CUDA (bad ids in embedding, bad targets in cross_entropy): the kernels record the first bad
// position in a device int64 and the op reads that one value back (a small D2H copy that synchronises the stream
// once per call). The offending value is then fetched (one element) to name it in the mt::Error(Data).
// linear_cross_entropy instead copies its targets to the host (N integers) and checks them there before any kernel.
#include "autograd/ops/nn_ops.h"

#include "autograd/ops/elementwise.h"
#include "autograd/ops/op_util.h"
#include "autograd/ops/reduce.h"
#include "kernels/embedding.h"
#include "kernels/linear_xent.h"
#include "kernels/softmax_xent.h"

namespace mt {

namespace {

// "[i, j, ...]": the multi-index of flat position `pos` in `shape`.
std::string position_str(int64_t pos, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
    idx[k] = shape[k] > 0 ? pos % shape[k] : 0;
    pos = shape[k] > 0 ? pos / shape[k] : 0;
  }
  return shape_str(idx);
}

int64_t element_i64(const Tensor& packed, int64_t i) {
  return packed.as_strided({1}, {1}, packed.offset() + i).to_vector_i64()[0];
}

void check_index_tensor(const char* op, const char* arg, const Tensor& t) {
  MT_CHECK_SHAPE(t.defined(), op, ": ", arg, " is undefined");
  MT_CHECK_SHAPE(t.dtype() == DType::I32 || t.dtype() == DType::I64, op, ": ", arg, " must be i32 or i64, got ",
                 t.describe());
}

// Device-side "first bad position" flag, initialised to n (= none).
Tensor bad_flag(int64_t n, Device dev) { return Tensor::full({1}, static_cast<double>(n), DType::I64, dev); }

int64_t read_flag(const Tensor& flag, int64_t n) {
  const int64_t v = flag.to_vector_i64()[0];
  return v >= n ? -1 : v;
}

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

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  ops::check_float("embedding", "weight", weight);
  check_index_tensor("embedding", "ids", ids);
  MT_CHECK_SHAPE(weight.dim() == 2, "embedding: weight must be [V, d], got ", weight.describe());
  MT_CHECK_SHAPE(ids.device() == weight.device(), "embedding: ids ", ids.describe(), " and weight ", weight.describe(),
                 " are on different devices");
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  Tensor idc = ids.contiguous(), wc = weight.contiguous();

  kernels::EmbeddingFwdParams p;
  p.dtype = weight.dtype();
  p.id_dtype = ids.dtype();
  p.ids = idc.data_ptr();
  p.n = n;
  p.V = V;
  p.D = D;
  p.weight = wc.data_ptr();
  p.out = out.data_ptr();
  int64_t bad = -1;
  if (weight.device().is_cpu()) {
    bad = kernels::embedding_fwd_cpu(p);
  } else if (n > 0) {
    Tensor flag = bad_flag(n, weight.device());
    p.bad_pos = flag.data<int64_t>();
    MT_CUDA_ONLY("embedding", kernels::embedding_fwd_cuda(p));
    bad = read_flag(flag, n);
  }
  if (bad >= 0)
    throw Error(ErrorKind::Data,
                str("embedding: id ", element_i64(idc, bad), " at position ", position_str(bad, ids.shape()),
                    " of ids ", shape_str(ids.shape()), " is outside [0, ", V, ") (weight ", weight.describe(), ")"));

  if (any_requires_grad({&weight})) {
    const DType dt = weight.dtype();
    const Device dev = weight.device();
    auto node =
        make_lambda_node("embedding", [idc, V, D, n, dt, dev](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          Tensor dw = Tensor::empty({V, D}, dt, dev);
          kernels::EmbeddingBwdParams b;
          b.id_dtype = idc.dtype();
          b.ids = idc.data_ptr();
          b.n = n;
          b.V = V;
          b.D = D;
          if (dev.is_cpu()) {
            Tensor gc = ops::as_cpu_compute(g[0].to(dt).contiguous()).contiguous();
            Tensor dwc = is_half(dt) ? Tensor::empty({V, D}, DType::F32, dev) : dw;
            b.dtype = gc.dtype();
            b.grad_out = gc.data_ptr();
            b.grad_weight = dwc.data_ptr();
            kernels::embedding_bwd_cpu(b);
            if (!dwc.same(dw)) dw.copy_(dwc);
          } else {
            Tensor gc = g[0].to(dt).contiguous();
            Tensor acc = is_half(dt) ? Tensor::empty({V, D}, DType::F32, dev) : Tensor();
            b.dtype = dt;
            b.grad_out = gc.data_ptr();
            b.grad_weight = dw.data_ptr();
            b.accum = acc.defined() ? acc.data_ptr() : nullptr;
            MT_CUDA_ONLY("embedding", kernels::embedding_bwd_cuda(b));
          }
          return {dw, Tensor()};
        });
    record_node(node, {weight, ids}, {out});
  }
  return out;
}

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
  check_index_tensor("cross_entropy", "targets", targets);
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

  kernels::XentParams p;
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
    Tensor flag = bad_flag(N, dev);
    p.dtype = x.dtype();
    p.logits = x.data_ptr();
    p.row_loss = row_loss.data_ptr();
    p.bad_row = flag.data<int64_t>();
    MT_CUDA_ONLY("cross_entropy", kernels::cross_entropy_fwd_cuda(p));
    bad = read_flag(flag, N);
  }
  if (bad >= 0)
    throw Error(ErrorKind::Data, str("cross_entropy: target ", element_i64(t, bad), " in row ", bad, " is outside [0, ",
                                     C, ") (logits ", logits.describe(), ", ignore_index ", ignore_index, ")"));

  if (any_requires_grad({&logits})) {
    auto node = make_lambda_node(
        "cross_entropy",
        [x, t, lse, count, ignore_index, N, C, cd, dev](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          Tensor gl = g[0].to(cd).contiguous();
          Tensor dx = Tensor::empty({N, C}, x.dtype(), dev);
          kernels::XentParams b;
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

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            int64_t chunk_rows) {
  ops::check_float("linear_cross_entropy", "h", h);
  ops::check_float("linear_cross_entropy", "weight", weight);
  check_index_tensor("linear_cross_entropy", "targets", targets);
  MT_CHECK_SHAPE(h.dim() == 2 && h.size(1) >= 1, "linear_cross_entropy: h must be [N, H] with H >= 1, got ",
                 h.describe());
  const int64_t N = h.size(0), H = h.size(1);
  MT_CHECK_SHAPE(weight.dim() == 2 && weight.size(1) == H && weight.size(0) >= 1,
                 "linear_cross_entropy: weight must be [V, ", H, "] with V >= 1 for h ", h.describe(), ", got ",
                 weight.describe());
  MT_CHECK_SHAPE(weight.dtype() == h.dtype() && weight.device() == h.device(), "linear_cross_entropy: weight ",
                 weight.describe(), " and h ", h.describe(), " must share dtype and device");
  MT_CHECK_SHAPE(targets.dim() == 1 && targets.size(0) == N, "linear_cross_entropy: targets must be [", N, "] for h ",
                 shape_str(h.shape()), ", got ", targets.describe());
  MT_CHECK_SHAPE(targets.device() == h.device(), "linear_cross_entropy: targets ", targets.describe(), " and h ",
                 h.describe(), " are on different devices");
  MT_CHECK_SHAPE(chunk_rows >= 0, "linear_cross_entropy: chunk_rows must be >= 0, got ", chunk_rows);
  const int64_t V = weight.size(0);
  const DType cd = compute_dtype(h.dtype());
  const Device dev = h.device();
  Tensor t = targets.contiguous();
  // The targets on the host (N integers): the bad-target check and the count cost one small copy, no kernel.
  int64_t count = 0;
  {
    const std::vector<int64_t> tv = t.to_vector_i64();
    for (int64_t i = 0; i < N; ++i) {
      if (tv[i] == ignore_index) continue;
      if (tv[i] < 0 || tv[i] >= V)
        throw Error(ErrorKind::Data, str("linear_cross_entropy: target ", tv[i], " in row ", i, " is outside [0, ", V,
                                         ") (weight ", weight.describe(), ", ignore_index ", ignore_index, ")"));
      ++count;
    }
  }
  if (N == 0) return cast(mul_scalar(sum(h), 0.0), cd);  // nothing to score: a zero that keeps h's graph
  Tensor loss = Tensor::empty({}, cd, dev);
  {
    Tensor x = h.contiguous(), w = weight.contiguous();
    if (dev.is_cpu()) {
      x = ops::as_cpu_compute(x);
      w = ops::as_cpu_compute(w);
    }
    const DType kd = x.dtype();
    // Default: as many rows as fit in 512 MiB of logits, balanced over the chunks (at mamba-130m's B=8 L=2048:
    // 4 chunks of 4094 rows). Fewer chunks mean fewer read-modify-writes of the f32 dW.
    const int64_t fit = std::max<int64_t>(1, (int64_t{512} << 20) / (V * static_cast<int64_t>(dtype_size(kd))));
    const int64_t nchunks = (N + fit - 1) / fit;
    const int64_t chunk = std::min(N, chunk_rows > 0 ? chunk_rows : (N + nchunks - 1) / nchunks);
    const bool grad = any_requires_grad({&h, &weight});
    Tensor scratch = Tensor::empty({chunk, V}, kd, dev), row_loss = Tensor::empty({N}, cd, dev);
    Tensor dh = grad ? Tensor::empty({N, H}, cd, dev) : Tensor();
    Tensor dw = grad ? Tensor::empty({V, H}, cd, dev) : Tensor();
    kernels::LinearXentParams p;
    p.dtype = kd;
    p.target_dtype = t.dtype();
    p.N = N;
    p.H = H;
    p.V = V;
    p.chunk = chunk;
    p.ignore_index = ignore_index;
    p.count = count;
    p.h = x.data_ptr();
    p.weight = w.data_ptr();
    p.targets = t.data_ptr();
    p.scratch = scratch.data_ptr();
    p.row_loss = row_loss.data_ptr();
    p.loss = loss.data_ptr();
    p.dh = grad ? dh.data_ptr() : nullptr;
    p.dweight = grad ? dw.data_ptr() : nullptr;
    if (dev.is_cpu())
      kernels::linear_xent_cpu(p);
    else
      MT_CUDA_ONLY("linear_cross_entropy", kernels::linear_xent_cuda(p));
    if (grad) {
      const DType hd = h.dtype(), wd = weight.dtype();
      const bool need_h = requires_grad(h), need_w = requires_grad(weight);
      auto node = make_lambda_node(
          "linear_cross_entropy",
          [dh, dw, hd, wd, cd, need_h, need_w](const std::vector<Tensor>& g) -> std::vector<Tensor> {
            Tensor gl = g[0].to(cd);
            return {need_h ? mul(dh, gl).to(hd) : Tensor(), need_w ? mul(dw, gl).to(wd) : Tensor(), Tensor()};
          });
      record_node(node, {h, weight, targets}, {loss});
    }
  }
  return loss;
}

}  // namespace mt
