// matmul and linear: validation, layout handling and the backward, on top of kernels/gemm.h.
//
// Layouts: every operand is handed to the GEMM as it lies in memory whenever its last two dims have one unit
// stride (a plain or a transposed row-major matrix) and its batch dims collapse to one uniform stride; only other
// layouts are copied. Backward uses the transpose flags (dA = dC B^T, dB = A^T dC), never transposed copies.
//
// matmul(a [..., M, K], b [K, N]): the leading dims of a fold into M (one GEMM of [prod(...) * M, K] @ [K, N]);
// dB is then A_folded^T @ dC_folded, i.e. the sum over the batch. matmul(a [..., M, K], b [..., K, N]) with equal
// batch dims: a strided-batched GEMM.
// linear(x [..., in], W [out, in], bias [out]): x folds to [R, in]; y = x W^T + bias (bias fused in the GEMM);
// dx = dy W, dW = dy^T x (summed over all R rows), db = 1^T dy (a [1, R] @ [R, out] GEMM).
#include "autograd/ops/gemm.h"

#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "kernels/gemm.h"

namespace mt {

namespace {

// A [batch..., R, C] tensor seen as `batch` row-major matrices: stored as [R, C] (trans = false, element (r, c) at
// r*ld + c) or as [C, R] (trans = true, element (r, c) at c*ld + r), matrix b at b*bstride.
struct MatArg {
  Tensor t;
  bool trans = false;
  int64_t ld = 1;
  int64_t bstride = 0;
};

bool try_mat(const Tensor& t, MatArg& m) {
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  const int64_t nd = t.dim();
  const int64_t R = s[nd - 2], C = s[nd - 1], sr = st[nd - 2], sc = st[nd - 1];
  // Batch dims: the innermost non-1 dim gives the stride; each outer non-1 dim must step over the inner ones.
  bool have = false;
  int64_t bstride = 0, expect = 0;
  for (int64_t i = nd - 3; i >= 0; --i) {
    if (s[i] == 1) continue;
    if (!have) {
      bstride = st[i];
      have = true;
    } else if (st[i] != expect) {
      return false;
    }
    expect = st[i] * s[i];
  }
  if (have && bstride <= 0) return false;  // broadcast (0) or reversed batches: copy
  m.t = t;
  m.bstride = bstride;
  if (R == 0 || C == 0) {
    m.trans = false;
    m.ld = std::max<int64_t>(C, 1);
    return true;
  }
  if (sc == 1 || C == 1) {
    const int64_t ld = R == 1 ? C : sr;
    if (ld >= C) {
      m.trans = false;
      m.ld = ld;
      return true;
    }
  }
  if (sr == 1 || R == 1) {
    const int64_t ld = C == 1 ? R : sc;
    if (ld >= R) {
      m.trans = true;
      m.ld = ld;
      return true;
    }
  }
  return false;
}

MatArg mat_arg(const Tensor& t) {
  MatArg m;
  if (try_mat(t, m)) return m;
  Tensor c = t.clone();
  MT_ASSERT(try_mat(c, m), "packed tensor ", c.describe(), " is not a matrix batch");
  return m;
}

// t [..., C] as a 2-D [rows, C] view (a copy only when the leading dims do not collapse to one stride).
Tensor fold_rows(const Tensor& t) {
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  const int64_t nd = t.dim();
  const int64_t C = s[nd - 1];
  if (nd == 2) return t;
  int64_t rows = 1;
  for (int64_t i = 0; i < nd - 1; ++i) rows *= s[i];
  bool have = false;
  int64_t rs = std::max<int64_t>(C, 1), expect = 0;
  for (int64_t i = nd - 2; i >= 0; --i) {
    if (s[i] == 1) continue;
    if (!have) {
      rs = st[i];
      have = true;
    } else if (st[i] != expect) {
      return t.contiguous().view({rows, C});
    }
    expect = st[i] * s[i];
  }
  return t.as_strided({rows, C}, {rs, nd >= 1 ? st[nd - 1] : 1}, t.offset());
}

// out (contiguous [batch..., M, N], `batch` matrices) = op(x) @ op(y) (+ bias [N]) (+ out itself with beta = 1),
// where op(x) = x^T if tx. x, y: [batch..., R, C] with the same batch count (or 2-D with batch == 1).
void gemm_into(const Tensor& x, bool tx, const Tensor& y, bool ty, const Tensor& out, int64_t batch, const Tensor& bias,
               double beta = 0.0) {
  const ops::Dispatch d("matmul", x);
  const Tensor xc = d.input(x), yc = d.input(y);
  Tensor bc = d.input(bias);
  if (bc.defined()) bc = bc.contiguous();
  // Accumulating on the CPU into a 16-bit out: the kernel reads and writes an f32 copy of it.
  const Tensor oc =
      beta != 0.0 && d.kernel_dtype(out.dtype()) != out.dtype() ? d.input(out).contiguous() : d.output_into(out);

  MatArg mx = mat_arg(xc), my = mat_arg(yc);
  const int64_t xr = xc.size(-2), xcols = xc.size(-1), yr = yc.size(-2), ycols = yc.size(-1);
  kernels::GemmParams p;
  p.dtype = d.kernel_dtype(x.dtype());
  p.batch = batch;
  p.M = tx ? xcols : xr;
  p.K = tx ? xr : xcols;
  p.N = ty ? yr : ycols;
  MT_ASSERT((ty ? ycols : yr) == p.K, "gemm inner sizes");
  // Logical op(x) = x stored non-transposed: trans_a = false; asking for x^T flips the storage flag.
  p.trans_a = tx ? !mx.trans : mx.trans;
  p.trans_b = ty ? !my.trans : my.trans;
  p.A = mx.t.data_ptr();
  p.lda = mx.ld;
  p.stride_a = batch > 1 ? mx.bstride : 0;
  p.B = my.t.data_ptr();
  p.ldb = my.ld;
  p.stride_b = batch > 1 ? my.bstride : 0;
  p.C = oc.data_ptr();
  p.ldc = std::max<int64_t>(p.N, 1);
  p.stride_c = p.M * p.N;
  if (batch > 1 && p.stride_c == 0) p.stride_c = 1;  // empty matrices: nothing is written
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.beta = beta;
  // 16-bit operands into an f32 out (a weight gradient for an f32 master, ops::grad_dtype): cuBLAS writes f32.
  p.c_f32 = is_half(p.dtype) && oc.dtype() == DType::F32;
  MT_ASSERT(p.c_f32 || oc.dtype() == p.dtype, "gemm: out ", dtype_name(oc.dtype()), " for ", dtype_name(p.dtype),
            " operands");
  d.run(kernels::gemm_cpu, MT_CUDA_KERNEL(gemm_cuda), p);
  d.write_back(oc, out);
}

Shape with_last(Shape s, int64_t v) {
  s.back() = v;
  return s;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  ops::check_float("matmul", "a", a);
  ops::check_float("matmul", "b", b);
  ops::check_same("matmul", {&a, &b});
  MT_CHECK_SHAPE(a.dim() >= 2 && b.dim() >= 2, "matmul: needs a [..., M, K] and b [K, N] or [..., K, N], got a ",
                 shape_str(a.shape()), " and b ", shape_str(b.shape()));
  const int64_t K = a.size(-1), N = b.size(-1);
  MT_CHECK_SHAPE(b.size(-2) == K, "matmul: inner dimensions differ: a ", shape_str(a.shape()), " has K = ", K,
                 " but b ", shape_str(b.shape()), " has ", b.size(-2), " rows");
  const bool shared_b = b.dim() == 2;
  if (!shared_b) {
    bool same_batch = a.dim() == b.dim();
    for (int64_t i = 0; same_batch && i < a.dim() - 2; ++i) same_batch = a.shape()[i] == b.shape()[i];
    MT_CHECK_SHAPE(same_batch, "matmul: batch dimensions must match exactly (or b must be 2-D [K, N]), got a ",
                   shape_str(a.shape()), " and b ", shape_str(b.shape()));
  }
  Shape out_shape = with_last(a.shape(), N);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  int64_t nbatch = 1;
  for (int64_t i = 0; i < a.dim() - 2; ++i) nbatch *= a.shape()[i];

  Tensor a2;  // the folded [rows, K] view when b is shared
  if (shared_b) {
    a2 = fold_rows(a);
    gemm_into(a2, false, b, false, fold_rows(out), 1, Tensor());
  } else if (nbatch > 0) {
    gemm_into(a, false, b, false, out, nbatch, Tensor());
  }

  if (any_requires_grad({&a, &b})) {
    const bool need_a = requires_grad(a), need_b = requires_grad(b);
    Tensor sa = need_b ? (shared_b ? a2 : a) : Tensor();
    Tensor sb = need_a ? b : Tensor();
    const Shape a_shape = a.shape(), b_shape = b.shape();
    const DType dt = a.dtype();
    const Device dev = a.device();
    auto node = make_lambda_node("matmul",
                                 [sa, sb, need_a, need_b, shared_b, a_shape, b_shape, dt, dev,
                                  nbatch](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   Tensor da, db;
                                   if (shared_b) {
                                     Tensor g2 = fold_rows(g[0]);
                                     if (need_a) {
                                       da = Tensor::empty(a_shape, dt, dev);
                                       gemm_into(g2, false, sb, true, fold_rows(da), 1, Tensor());  // dA = dC B^T
                                     }
                                     if (need_b) {
                                       db = Tensor::empty(b_shape, dt, dev);
                                       gemm_into(sa, true, g2, false, db, 1,
                                                 Tensor());  // dB = A^T dC, summed over the folded rows
                                     }
                                   } else {
                                     if (need_a) {
                                       da = Tensor::empty(a_shape, dt, dev);
                                       if (nbatch > 0) gemm_into(g[0], false, sb, true, da, nbatch, Tensor());
                                     }
                                     if (need_b) {
                                       db = Tensor::empty(b_shape, dt, dev);
                                       if (nbatch > 0) gemm_into(sa, true, g[0], false, db, nbatch, Tensor());
                                     }
                                   }
                                   return {da, db};
                                 });
    record_node(node, {a, b}, {out});
  }
  return out;
}

namespace {

void check_linear(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  ops::check_float(op, "x", x);
  ops::check_float(op, "weight", weight);
  if (bias.defined()) {
    ops::check_float(op, "bias", bias);
    ops::check_same(op, {&x, &weight, &bias});
  } else {
    ops::check_same(op, {&x, &weight});
  }
  MT_CHECK_SHAPE(weight.dim() == 2, op, ": weight must be [out, in], got ", shape_str(weight.shape()));
  MT_CHECK_SHAPE(x.dim() >= 1 && x.size(-1) == weight.size(1), op, ": x ", shape_str(x.shape()),
                 " must end in in_features = ", weight.size(1), " (weight [out, in] is ", shape_str(weight.shape()),
                 ")");
  if (bias.defined())
    MT_CHECK_SHAPE(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be [", weight.size(0), "], got ",
                   shape_str(bias.shape()));
}

// Rows [at, at + n) of a [rows, C] or [rows] tensor, as a view.
Tensor row_block(const Tensor& t, int64_t at, int64_t n) {
  Shape shape = t.shape();
  shape[0] = n;
  return t.as_strided(shape, t.strides(), t.offset() + at * t.strides()[0]);
}

// linear's output in packed parts of `sizes` (checked by the callers), one GEMM per block of weight rows; the
// backward of both linear (one part) and linear_split. op names the node.
std::vector<Tensor> linear_parts(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const std::vector<int64_t>& sizes) {
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  const Tensor x2 = fold_rows(x);
  const int64_t rows = x2.size(0);
  std::vector<Tensor> outs;
  for (int64_t i = 0, at = 0; i < static_cast<int64_t>(sizes.size()); at += sizes[i++]) {
    outs.push_back(Tensor::empty(with_last(x.shape(), sizes[i]), x.dtype(), x.device()));
    gemm_into(x2, false, row_block(weight, at, sizes[i]), true, fold_rows(outs.back()), 1,
              bias.defined() ? row_block(bias, at, sizes[i]) : Tensor());
  }

  if (any_requires_grad({&x, &weight, &bias})) {
    const bool need_x = requires_grad(x), need_w = requires_grad(weight), need_b = requires_grad(bias);
    const Tensor sx = need_w ? x2 : Tensor();
    const Tensor sw = need_x ? weight : Tensor();
    const Shape x_shape = x.shape();
    const DType dt = x.dtype(), wdt = ops::grad_dtype(weight), bdt = need_b ? ops::grad_dtype(bias) : dt;
    const Device dev = x.device();
    auto node = make_lambda_node(
        op,
        [sx, sw, sizes, need_x, need_w, need_b, x_shape, dt, wdt, bdt, dev, rows, in_f,
         out_f](const std::vector<Tensor>& g) -> std::vector<Tensor> {
          Tensor dx, dw, db;
          if (need_x) dx = Tensor::empty(x_shape, dt, dev);
          if (need_w) dw = Tensor::empty({out_f, in_f}, wdt, dev);
          if (need_b) db = Tensor::empty({out_f}, bdt, dev);
          const Tensor ones = need_b ? Tensor::ones({1, rows}, dt, dev) : Tensor();
          bool dx_written = false;
          for (int64_t i = 0, at = 0; i < static_cast<int64_t>(sizes.size()); at += sizes[i++]) {
            const int64_t n = sizes[i];
            if (!g[i].defined()) {  // this part was not used: no gradient through it
              if (need_w) row_block(dw, at, n).zero_();
              if (need_b) row_block(db, at, n).zero_();
              continue;
            }
            const Tensor g2 = fold_rows(g[i]);  // [R, n]
            if (need_x) {                       // dx (+)= dy_i W_i
              gemm_into(g2, false, row_block(sw, at, n), false, fold_rows(dx), 1, Tensor(), dx_written ? 1.0 : 0.0);
              dx_written = true;
            }
            if (need_w) gemm_into(g2, true, sx, false, row_block(dw, at, n), 1, Tensor());  // dW_i = dy_i^T x
            if (need_b) gemm_into(ones, false, g2, false, row_block(db, at, n).view({1, n}), 1, Tensor());
          }
          if (need_x && !dx_written) dx.zero_();
          return {dx, dw, db};
        });
    record_node(node, {x, weight, bias}, outs);
  }
  return outs;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear("linear", x, weight, bias);
  return linear_parts("linear", x, weight, bias, {weight.size(0)})[0];
}

std::vector<Tensor> linear_split(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const std::vector<int64_t>& sizes) {
  check_linear("linear_split", x, weight, bias);
  int64_t total = 0;
  for (int64_t s : sizes) {
    MT_CHECK_SHAPE(s >= 1, "linear_split: every part needs at least one output, got sizes ", shape_str(sizes));
    total += s;
  }
  MT_CHECK_SHAPE(!sizes.empty() && total == weight.size(0), "linear_split: sizes ", shape_str(sizes),
                 " must add up to the weight's ", weight.size(0), " rows");
  return linear_parts("linear_split", x, weight, bias, sizes);
}

}  // namespace mt
