// linear_cross_entropy: validation, chunking, device dispatch and the tape node (kernels in
// kernels/linear_cross_entropy.h). The targets are copied to the host (N integers) and checked there before any
// kernel.
#include "autograd/ops/linear_cross_entropy.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/op_util.h"
#include "autograd/ops/reduce.h"
#include "kernels/linear_cross_entropy.h"

namespace mt {

namespace {

DType compute_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

}  // namespace

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            int64_t chunk_rows) {
  ops::check_float("linear_cross_entropy", "h", h);
  ops::check_float("linear_cross_entropy", "weight", weight);
  ops::check_index("linear_cross_entropy", "targets", targets);
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
    const ops::Dispatch d("linear_cross_entropy", h);
    const Tensor x = d.input(h.contiguous()), w = d.input(weight.contiguous());
    const DType kd = d.kernel_dtype(h.dtype());
    // Default: as many rows as fit in 512 MiB of logits, balanced over the chunks (at mamba-130m's B=8 L=2048:
    // 4 chunks of 4094 rows). Fewer chunks mean fewer read-modify-writes of the f32 dW.
    const int64_t fit = std::max<int64_t>(1, (int64_t{512} << 20) / (V * static_cast<int64_t>(dtype_size(kd))));
    const int64_t nchunks = (N + fit - 1) / fit;
    const int64_t chunk = std::min(N, chunk_rows > 0 ? chunk_rows : (N + nchunks - 1) / nchunks);
    const bool grad = any_requires_grad({&h, &weight});
    Tensor scratch = Tensor::empty({chunk, V}, kd, dev), row_loss = Tensor::empty({N}, cd, dev);
    Tensor dh = grad ? Tensor::empty({N, H}, cd, dev) : Tensor();
    Tensor dw = grad ? Tensor::empty({V, H}, cd, dev) : Tensor();
    kernels::LinearCrossEntropyParams p;
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
    d.run(kernels::linear_cross_entropy_cpu, MT_CUDA_KERNEL(linear_cross_entropy_cuda), p);
    if (grad) {
      // dw is summed in cd: handed on in f32 where the weight is a 16-bit copy of an f32 master (ops::grad_dtype).
      const DType hd = h.dtype(), wd = ops::grad_dtype(weight);
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
