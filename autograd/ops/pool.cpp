#include "autograd/ops/pool.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"

namespace mt {

kernels::PoolMode pool_mode_from_name(const std::string& n) {
  if (n == "mean") return kernels::PoolMode::Mean;
  if (n == "max") return kernels::PoolMode::Max;
  if (n == "last") return kernels::PoolMode::Last;
  throw Error(ErrorKind::Config, str("unknown pooling '", n, "' (expected mean, max, last or state)"));
}

Tensor masked_pool(const Tensor& x_in, const Tensor& mask_in, kernels::PoolMode mode) {
  ops::check_float("masked_pool", "x", x_in);
  MT_CHECK_SHAPE(x_in.dim() == 3, "masked_pool: x must be [B, L, D], got ", x_in.describe());
  const int64_t B = x_in.size(0), L = x_in.size(1), D = x_in.size(2);
  Tensor mask;
  if (mask_in.defined()) {
    MT_CHECK_SHAPE(mask_in.shape() == (Shape{B, L}), "masked_pool: mask ", mask_in.describe(), " for x ",
                   x_in.describe());
    mask = mask_in.to(x_in.device()).to(DType::F32).contiguous();
  }
  const ops::Dispatch d("masked_pool", x_in);
  const Tensor x = d.input(x_in).contiguous();
  const Tensor out = d.output({B, D}, x_in.dtype());
  Tensor index = mode == kernels::PoolMode::Mean ? Tensor() : Tensor::empty({B, D}, DType::I64, x.device());
  kernels::PoolParams p;
  p.x = x.data_ptr();
  p.mask = mask.defined() ? mask.data<float>() : nullptr;
  p.out = out.data_ptr();
  p.index = index.defined() ? index.data<int64_t>() : nullptr;
  p.B = B;
  p.L = L;
  p.D = D;
  p.dtype = d.kernel_dtype(x_in.dtype());
  p.mode = mode;
  d.run(kernels::pool_fwd_cpu, MT_CUDA_KERNEL(pool_fwd_cuda), p);
  Tensor result = d.result(out, x_in.dtype());
  if (any_requires_grad({&x_in})) {
    const DType in_dtype = x_in.dtype();
    auto node = make_lambda_node("masked_pool", [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      const ops::Dispatch dg("masked_pool", g[0]);
      const Tensor go = dg.input(g[0]).contiguous();
      const Tensor gx = dg.output({B, L, D}, g[0].dtype());
      kernels::PoolParams q = p;
      q.mask = mask.defined() ? mask.data<float>() : nullptr;
      q.index = index.defined() ? index.data<int64_t>() : nullptr;
      q.grad_out = go.data_ptr();
      q.grad_x = gx.data_ptr();
      q.dtype = dg.kernel_dtype(g[0].dtype());
      dg.run(kernels::pool_bwd_cpu, MT_CUDA_KERNEL(pool_bwd_cuda), q);
      return {dg.result(gx, in_dtype)};
    });
    record_node(node, {x_in}, {result});
  }
  return result;
}

}  // namespace mt
