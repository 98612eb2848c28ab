// Differentiable sum / mean over dims (autograd/ops/reduce.h) over the kernel in kernels/reduce.h.
//
// Every reduction becomes y[o, i] = scale * sum_r x[o, r, i] on a packed [outer, R, inner] view: directly when x is
// contiguous and the reduced dims (ignoring size-1 dims) are adjacent, else after a copy that permutes the kept
// dims first and the reduced dims last (inner = 1). The backward broadcasts g (times 1/count for mean) back over
// the reduced dims with a zero-stride copy.
#include "autograd/ops/reduce.h"

#include "autograd/autograd.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/op_util.h"
#include "kernels/reduce.h"

namespace mt {

namespace {

struct ReducePlan {
  std::vector<bool> reduced;  // per input dim
  Shape keep_shape;           // input shape with reduced dims set to 1
  Shape out_shape;            // keep_shape, or without the reduced dims when !keepdim
  int64_t count = 1;          // elements summed into each output
};

ReducePlan make_plan(const char* op, const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  ReducePlan pl;
  pl.reduced.assign(shape.size(), dims.empty());
  for (int64_t d : dims) {
    const int64_t k = ops::wrap_dim(op, d, rank);
    if (rank == 0) continue;  // dim 0 / -1 of a scalar: nothing to reduce
    MT_CHECK_SHAPE(!pl.reduced[k], op, ": dimension ", d, " appears more than once in the dims of a reduction over ",
                   shape_str(shape));
    pl.reduced[k] = true;
  }
  for (int64_t k = 0; k < rank; ++k) {
    if (pl.reduced[k]) {
      pl.count *= shape[k];
      pl.keep_shape.push_back(1);
      if (keepdim) pl.out_shape.push_back(1);
    } else {
      pl.keep_shape.push_back(shape[k]);
      pl.out_shape.push_back(shape[k]);
    }
  }
  return pl;
}

// scale * sum of a over the reduced dims, packed with shape pl.keep_shape, a's dtype. Not recorded.
Tensor reduce_raw(const char* name, const Tensor& a, const ReducePlan& pl, double scale) {
  const ops::Dispatch d(name, a);
  Tensor x = d.input(a);
  const int64_t rank = x.dim();

  // Can x be read as [outer, R, inner] in place? Needs contiguity and the reduced dims of size > 1 adjacent.
  int first = -1, last = -1;
  bool adjacent = true;
  for (int64_t k = 0; k < rank; ++k) {
    if (x.shape()[k] == 1) continue;
    if (pl.reduced[k]) {
      if (first < 0)
        first = static_cast<int>(k);
      else if (last != static_cast<int>(k) - 1) {
        // a kept dim of size > 1 lies between two reduced dims
        for (int64_t j = last + 1; j < k; ++j)
          if (x.shape()[j] != 1) adjacent = false;
      }
      last = static_cast<int>(k);
    }
  }
  int64_t outer = 1, R = 1, inner = 1;
  if (x.is_contiguous() && adjacent) {
    for (int64_t k = 0; k < rank; ++k) {
      if (first >= 0 && k >= first && k <= last)
        R *= x.shape()[k];  // size-1 kept dims in between are harmless
      else if (first < 0 || k < first)
        outer *= x.shape()[k];
      else
        inner *= x.shape()[k];
    }
  } else {
    // Permute kept dims first, reduced dims last, and pack: [outer, R] rows.
    Shape ps, pst;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t k = 0; k < rank; ++k)
        if (pl.reduced[k] == (pass == 1)) {
          ps.push_back(x.shape()[k]);
          pst.push_back(x.strides()[k]);
          (pass == 1 ? R : outer) *= x.shape()[k];
        }
    x = x.as_strided(ps, pst, x.offset()).contiguous();
  }

  Tensor y = d.output(pl.keep_shape, a.dtype());
  kernels::ReduceParams p;
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.dtype = d.kernel_dtype(a.dtype());
  p.outer = outer;
  p.reduce = R;
  p.inner = inner;
  p.scale = scale;
  d.run(kernels::reduce_sum_fwd_cpu, MT_CUDA_KERNEL(reduce_sum_fwd_cuda), p);
  return d.result(y, a.dtype());
}

// g (shape pl.out_shape) broadcast back to `in_shape` as a packed tensor.
Tensor expand_back(const Tensor& g, const ReducePlan& pl, const Shape& in_shape) {
  Tensor gk = g.contiguous().view(pl.keep_shape);
  Shape st = gk.strides();
  for (size_t k = 0; k < in_shape.size(); ++k)
    if (pl.reduced[k]) st[k] = 0;
  return gk.as_strided(in_shape, st, gk.offset()).contiguous();
}

Tensor reduction(const char* name, const Tensor& a, const std::vector<int64_t>& dims, bool keepdim, bool mean) {
  ops::check_float(name, "input", a);
  const ReducePlan pl = make_plan(name, a.shape(), dims, keepdim);
  const double scale = mean ? 1.0 / static_cast<double>(pl.count) : 1.0;  // mean of nothing: NaN, like PyTorch
  Tensor y = reduce_raw(name, a, pl, scale).view(pl.out_shape);
  if (any_requires_grad({&a})) {
    const Shape in_shape = a.shape();
    const DType dt = a.dtype();
    record_node(make_lambda_node(name,
                                 [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   Tensor g0 = g[0].dtype() == dt ? g[0] : g[0].to(dt);
                                   if (scale != 1.0) g0 = mul_scalar(g0, scale);  // on the small side
                                   return {expand_back(g0, pl, in_shape)};
                                 }),
                {a}, {y});
  }
  return y;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduction("sum", a, dims, keepdim, false);
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduction("mean", a, dims, keepdim, true);
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  ops::check_float("sum_to_shape", "gradient", g);
  if (g.shape() == shape) return g.detach();
  const size_t nd = g.shape().size();
  MT_CHECK_SHAPE(shape.size() <= nd, "sum_to_shape: cannot sum ", shape_str(g.shape()), " to ", shape_str(shape),
                 " (target has more dims)");
  ReducePlan pl;
  pl.reduced.assign(nd, false);
  const size_t lead = nd - shape.size();
  for (size_t k = 0; k < nd; ++k) {
    const int64_t n = g.shape()[k];
    const int64_t want = k < lead ? 1 : shape[k - lead];
    MT_CHECK_SHAPE(want == n || want == 1, "sum_to_shape: cannot sum ", shape_str(g.shape()), " to ", shape_str(shape),
                   " (dimension ", k, ": ", n, " vs ", want, ")");
    pl.reduced[k] = k < lead || (want == 1 && n != 1);
    pl.keep_shape.push_back(pl.reduced[k] ? 1 : n);
  }
  return reduce_raw("sum_to_shape", g, pl, 1.0).view(shape);
}

}  // namespace mt
