// embedding: validation, device dispatch and the tape node (kernels in kernels/embedding.h).
//
// Bad ids on CUDA: the kernel records the first bad position in a device flag (ops::bad_flag) and the op reads it
// back once per call, then fetches the offending id to name it in the mt::Error(Data).
#include "autograd/ops/embedding.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "core/determinism.h"
#include "kernels/embedding.h"

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

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  ops::check_float("embedding", "weight", weight);
  ops::check_index("embedding", "ids", ids);
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
    bad = kernels::embedding_fwd_cpu(p);  // returns the first bad position; CUDA records it in a device flag
  } else if (n > 0) {
    Tensor flag = ops::bad_flag(n, weight.device());
    p.bad_pos = flag.data<int64_t>();
    ops::run_cuda("embedding", MT_CUDA_KERNEL(embedding_fwd_cuda), p);
    bad = ops::read_flag(flag, n);
  }
  if (bad >= 0)
    throw Error(ErrorKind::Data,
                str("embedding: id ", ops::element_i64(idc, bad), " at position ", position_str(bad, ids.shape()),
                    " of ids ", shape_str(ids.shape()), " is outside [0, ", V, ") (weight ", weight.describe(), ")"));

  if (any_requires_grad({&weight})) {
    const DType dt = weight.dtype(), wdt = ops::grad_dtype(weight);
    const Device dev = weight.device();
    auto node = make_lambda_node(
        "embedding", [idc, V, D, n, dt, wdt, dev](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          Tensor dw = Tensor::empty({V, D}, wdt, dev);
          kernels::EmbeddingBwdParams b;
          b.id_dtype = idc.dtype();
          b.ids = idc.data_ptr();
          b.n = n;
          b.V = V;
          b.D = D;
          const ops::Dispatch d("embedding", dev, ops::cpu_compute_dtype(dt));
          const Tensor gc = d.input(g[0].to(dt).contiguous()).contiguous(), dwc = d.output_into(dw);
          // CUDA sums bf16 / f16 gradients in an f32 buffer: its own, or dw itself when dw is f32 (the gradient of a
          // weight copy whose master is f32). The CPU kernel writes an f32 output.
          const bool into_f32 = !d.cpu() && is_half(dt) && wdt == DType::F32;
          const Tensor acc = !d.cpu() && is_half(dt) && !into_f32 ? Tensor::empty({V, D}, DType::F32, dev) : Tensor();
          b.dtype = d.kernel_dtype(dt);
          b.grad_out = gc.data_ptr();
          b.grad_weight = into_f32 ? nullptr : dwc.data_ptr();
          b.accum = into_f32 ? dwc.data_ptr() : acc.defined() ? acc.data_ptr() : nullptr;
          // run.deterministic: the sorted path (the CPU's sum order) instead of atomics, with its sort scratch.
          Tensor sort_scratch;
          if (!d.cpu() && deterministic_kernels() && n > 0) {
            auto bytes_of = MT_CUDA_KERNEL(embedding_bwd_sort_bytes_cuda);
            const size_t bytes = ops::run_cuda("embedding", bytes_of, n, V);
            sort_scratch = Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::I64, dev);
            b.deterministic = true;
            b.sort_scratch = sort_scratch.data_ptr();
          }
          d.run(kernels::embedding_bwd_cpu, MT_CUDA_KERNEL(embedding_bwd_cuda), b);
          d.write_back(dwc, dw);
          return {dw, Tensor()};
        });
    record_node(node, {weight, ids}, {out});
  }
  return out;
}

}  // namespace mt
