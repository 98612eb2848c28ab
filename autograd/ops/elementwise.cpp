// Differentiable elementwise ops (autograd/ops/elementwise.h) over the kernels in kernels/elementwise.h.
//
// Conventions: outputs are always fresh tensors; CPU bf16 / f16 inputs run through f32 copies (ops::Dispatch);
// CUDA runs every float dtype natively. Backward lambdas run with grad mode off, so the public ops they call
// (sum_to_shape, neg) are not recorded.
#include "autograd/ops/elementwise.h"

#include <algorithm>

#include "autograd/autograd.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/op_util.h"
#include "autograd/ops/reduce.h"
#include "kernels/elementwise.h"

namespace mt {

namespace {

using kernels::BinaryOp;
using kernels::BroadcastLayout;
using kernels::UnaryOp;

// Shapes broadcast numpy-style, or an error naming the op and both shapes.
Shape broadcast_for(const char* op, const Shape& a, const Shape& b) {
  if (a == b) return a;
  const size_t nd = std::max(a.size(), b.size());
  Shape out(nd);
  for (size_t k = 0; k < nd; ++k) {
    const int64_t da = k < nd - a.size() ? 1 : a[k - (nd - a.size())];
    const int64_t db = k < nd - b.size() ? 1 : b[k - (nd - b.size())];
    MT_CHECK_SHAPE(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                   " cannot be broadcast together (dimension ", k, " of the result: ", da, " vs ", db, ")");
    out[k] = da == 1 ? db : da;
  }
  return out;
}

// Stride of a tensor (shape s, strides st, right-aligned to an out shape of rank nd) along out dim d; 0 where the
// tensor is broadcast (missing or size-1 dim).
int64_t bcast_stride(const Shape& s, const Shape& st, size_t nd, size_t d) {
  if (d < nd - s.size()) return 0;
  const size_t k = d - (nd - s.size());
  return s[k] == 1 ? 0 : st[k];
}

// The kernels' view of a broadcast: size-1 output dims dropped, adjacent dims merged where both inputs are
// linear across them (outer stride == inner stride * inner size, which also holds for two broadcast dims).
BroadcastLayout make_layout(const char* op, const Shape& sa, const Shape& sta, const Shape& sb, const Shape& stb,
                            const Shape& out) {
  BroadcastLayout L;
  L.numel = shape_numel(out);
  std::vector<int64_t> shape, as, bs;
  const size_t nd = out.size();
  for (size_t d = 0; d < nd; ++d) {
    const int64_t n = out[d];
    if (n == 1) continue;
    const int64_t a = bcast_stride(sa, sta, nd, d), b = bcast_stride(sb, stb, nd, d);
    if (!shape.empty() && as.back() == a * n && bs.back() == b * n) {
      shape.back() *= n;
      as.back() = a;
      bs.back() = b;
    } else {
      shape.push_back(n);
      as.push_back(a);
      bs.push_back(b);
    }
  }
  MT_CHECK_SHAPE(shape.size() <= static_cast<size_t>(kernels::kEwMaxDims), op, ": broadcast of ", shape_str(sa),
                 " and ", shape_str(sb), " needs more than ", kernels::kEwMaxDims, " dims");
  L.ndim = static_cast<int>(shape.size());
  for (int d = 0; d < L.ndim; ++d) {
    L.shape[d] = shape[d];
    L.a_strides[d] = as[d];
    L.b_strides[d] = bs[d];
  }
  L.contiguous = L.ndim == 0 || (L.ndim == 1 && as[0] == 1 && bs[0] == 1);
  return L;
}

BroadcastLayout make_layout(const char* op, const Tensor& a, const Tensor& b, const Shape& out) {
  return make_layout(op, a.shape(), a.strides(), b.shape(), b.strides(), out);
}

// out = a op b (no autograd).
Tensor binary_raw(const char* name, BinaryOp op, const Tensor& a, const Tensor& b, const Shape& out_shape) {
  const ops::Dispatch d(name, a);
  const Tensor ac = d.input(a), bc = d.input(b);
  Tensor out = d.output(out_shape, a.dtype());
  kernels::BinaryParams p;
  p.a = ac.data_ptr();
  p.b = bc.data_ptr();
  p.out = out.data_ptr();
  p.dtype = d.kernel_dtype(a.dtype());
  p.op = op;
  p.layout = make_layout(name, ac, bc, out_shape);
  d.run(kernels::binary_fwd_cpu, MT_CUDA_KERNEL(binary_fwd_cuda), p);
  return d.result(out, a.dtype());
}

// g converted to dtype dt (gradients normally arrive in the output's dtype already).
Tensor as_dtype(const Tensor& g, DType dt) { return g.dtype() == dt ? g : g.to(dt); }

// Full-shape gradients of mul / div: ga = g*b, gb = g*a (mul); ga = g/b, gb = -g*a/b^2 (div). a or b may be
// undefined when the gradient that needs it is not requested; a_shape / b_shape give the broadcast geometry.
// Returns {ga, gb} at the output shape in the compute dtype (f32 for bf16 / f16 on the CPU).
std::pair<Tensor, Tensor> binary_bwd_raw(const char* name, BinaryOp op, const Tensor& g_in, const Tensor& a,
                                         const Tensor& b, const Shape& a_shape, const Shape& b_shape, bool need_a,
                                         bool need_b) {
  const ops::Dispatch d(name, g_in);
  const Tensor g = d.input(g_in).contiguous(), ac = d.input(a), bc = d.input(b);
  const DType dt = g.dtype();
  const Shape& out_shape = g.shape();
  const Shape zero_a(a_shape.size(), 0), zero_b(b_shape.size(), 0);
  kernels::BinaryBwdParams p;
  p.g = g.data_ptr();
  p.a = ac.defined() ? ac.data_ptr() : nullptr;
  p.b = bc.defined() ? bc.data_ptr() : nullptr;
  p.dtype = dt;
  p.op = op;
  p.layout = make_layout(name, a_shape, ac.defined() ? ac.strides() : zero_a, b_shape,
                         bc.defined() ? bc.strides() : zero_b, out_shape);
  Tensor ga = need_a ? Tensor::empty(out_shape, dt, g.device()) : Tensor();
  Tensor gb = need_b ? Tensor::empty(out_shape, dt, g.device()) : Tensor();
  p.ga = need_a ? ga.data_ptr() : nullptr;
  p.gb = need_b ? gb.data_ptr() : nullptr;
  d.run(kernels::binary_bwd_cpu, MT_CUDA_KERNEL(binary_bwd_cuda), p);
  return {ga, gb};
}

Tensor binary(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  ops::check_float(name, "a", a);
  ops::check_float(name, "b", b);
  ops::check_same(name, {&a, &b});
  const Shape out_shape = broadcast_for(name, a.shape(), b.shape());
  Tensor out = binary_raw(name, op, a, b, out_shape);
  if (!any_requires_grad({&a, &b})) return out;

  const bool need_a = requires_grad(a), need_b = requires_grad(b);
  const Shape sa = a.shape(), sb = b.shape();
  const DType dt = a.dtype();
  std::shared_ptr<Node> node;
  if (op == BinaryOp::Add || op == BinaryOp::Sub) {
    const bool sub = op == BinaryOp::Sub;
    node = make_lambda_node(name, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      const Tensor g0 = as_dtype(g[0], dt);
      Tensor ga = need_a ? sum_to_shape(g0, sa) : Tensor();
      Tensor gb = need_b ? sum_to_shape(g0, sb) : Tensor();
      if (sub && gb.defined()) gb = neg(gb);
      return {ga, gb};
    });
  } else {
    // Save only the operands the requested gradients read: ga reads b; gb reads a (and b for div).
    const bool div = op == BinaryOp::Div;
    const Tensor a_saved = need_b ? a.detach() : Tensor();
    const Tensor b_saved = (need_a || div) ? b.detach() : Tensor();
    node = make_lambda_node(name, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      auto full = binary_bwd_raw(name, op, as_dtype(g[0], dt), a_saved, b_saved, sa, sb, need_a, need_b);
      Tensor ga = need_a ? as_dtype(sum_to_shape(full.first, sa), dt) : Tensor();
      Tensor gb = need_b ? as_dtype(sum_to_shape(full.second, sb), dt) : Tensor();
      return {ga, gb};
    });
  }
  record_node(node, {a, b}, {out});
  return out;
}

// y = f(x) (packed, x's dtype), no autograd.
Tensor unary_raw(const char* name, UnaryOp op, const Tensor& x, double alpha = 1.0, double beta = 0.0) {
  const ops::Dispatch d(name, x);
  const Tensor xc = d.input(x).contiguous();
  Tensor y = d.output(x.shape(), x.dtype());
  kernels::UnaryParams p;
  p.x = xc.data_ptr();
  p.y = y.data_ptr();
  p.dtype = d.kernel_dtype(x.dtype());
  p.op = op;
  p.numel = x.numel();
  p.alpha = alpha;
  p.beta = beta;
  d.run(kernels::unary_fwd_cpu, MT_CUDA_KERNEL(unary_fwd_cuda), p);
  return d.result(y, x.dtype());
}

// gx = g * f'(.) from the saved input or output, in saved's dtype.
Tensor unary_bwd_raw(const char* name, UnaryOp op, const Tensor& g_in, const Tensor& saved) {
  const DType dt = saved.dtype();
  const ops::Dispatch d(name, saved);
  const Tensor g = d.input(as_dtype(g_in, dt)).contiguous(), s = d.input(saved).contiguous();
  Tensor gx = d.output(saved.shape(), dt);
  kernels::UnaryBwdParams p;
  p.g = g.data_ptr();
  p.saved = s.data_ptr();
  p.gx = gx.data_ptr();
  p.dtype = d.kernel_dtype(dt);
  p.op = op;
  p.numel = saved.numel();
  d.run(kernels::unary_bwd_cpu, MT_CUDA_KERNEL(unary_bwd_cuda), p);
  return d.result(gx, dt);
}

Tensor unary(const char* name, UnaryOp op, const Tensor& a) {
  ops::check_float(name, "input", a);
  Tensor y = unary_raw(name, op, a);
  if (any_requires_grad({&a})) {
    const Tensor saved = kernels::unary_bwd_uses_output(op) ? y.detach() : a.detach();
    record_node(make_lambda_node(name,
                                 [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   return {unary_bwd_raw(name, op, g[0], saved)};
                                 }),
                {a}, {y});
  }
  return y;
}

// y = alpha * a + beta; backward alpha * g.
Tensor affine(const char* name, const Tensor& a, double alpha, double beta) {
  ops::check_float(name, "input", a);
  Tensor y = unary_raw(name, UnaryOp::Affine, a, alpha, beta);
  if (any_requires_grad({&a})) {
    const DType dt = a.dtype();
    record_node(make_lambda_node(name,
                                 [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   const Tensor g0 = as_dtype(g[0], dt);
                                   return {alpha == 1.0 ? g0 : unary_raw(name, UnaryOp::Affine, g0, alpha, 0.0)};
                                 }),
                {a}, {y});
  }
  return y;
}

// A fresh alias of a whose gradient passes through unchanged (converted back to a's dtype).
Tensor identity(const char* name, const Tensor& a) {
  Tensor y = a.detach();
  if (any_requires_grad({&a})) {
    const DType dt = a.dtype();
    record_node(make_lambda_node(
                    name, [dt](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {as_dtype(g[0], dt)}; }),
                {a}, {y});
  }
  return y;
}

// y_i = keep_i ? x_i / (1 - p) : 0 with keep_i from Philox(seed, offset, i); no autograd.
Tensor dropout_raw(const Tensor& x, double prob, uint64_t seed, uint64_t offset) {
  const ops::Dispatch d("dropout", x);
  const Tensor xc = d.input(x).contiguous();
  Tensor y = d.output(x.shape(), x.dtype());
  kernels::DropoutParams p;
  p.x = xc.data_ptr();
  p.y = y.data_ptr();
  p.dtype = d.kernel_dtype(x.dtype());
  p.numel = x.numel();
  p.p = prob;
  p.seed = seed;
  p.offset = offset;
  d.run(kernels::dropout_apply_cpu, MT_CUDA_KERNEL(dropout_apply_cuda), p);
  return d.result(y, x.dtype());
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) { return broadcast_for("broadcast_shapes", a, b); }

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary("div", BinaryOp::Div, a, b); }
Tensor add_scalar(const Tensor& a, double s) { return affine("add_scalar", a, 1.0, s); }
Tensor mul_scalar(const Tensor& a, double s) { return affine("mul_scalar", a, s, 0.0); }
Tensor neg(const Tensor& a) { return affine("neg", a, -1.0, 0.0); }

Tensor exp(const Tensor& a) { return unary("exp", UnaryOp::Exp, a); }
Tensor log(const Tensor& a) { return unary("log", UnaryOp::Log, a); }
Tensor sigmoid(const Tensor& a) { return unary("sigmoid", UnaryOp::Sigmoid, a); }
Tensor silu(const Tensor& a) { return unary("silu", UnaryOp::Silu, a); }
Tensor softplus(const Tensor& a) { return unary("softplus", UnaryOp::Softplus, a); }
Tensor tanh(const Tensor& a) { return unary("tanh", UnaryOp::Tanh, a); }
Tensor sqrt(const Tensor& a) { return unary("sqrt", UnaryOp::Sqrt, a); }
Tensor square(const Tensor& a) { return unary("square", UnaryOp::Square, a); }

namespace {
// The tape node of a float -> float conversion y of a: the gradient converted back to a's dtype.
void record_cast(const Tensor& a, const Tensor& y) {
  const DType back = a.dtype();
  record_node(
      make_lambda_node("cast", [back](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {g[0].to(back)}; }),
      {a}, {y});
}
}  // namespace

Tensor cast(const Tensor& a, DType dtype) {
  MT_CHECK_SHAPE(a.defined(), "cast: input is undefined");
  if (a.dtype() == dtype) return identity("cast", a);
  Tensor y = a.to(dtype);
  // Only float -> float conversions carry a gradient (an integer result cannot require grad).
  if (is_floating(dtype) && any_requires_grad({&a})) record_cast(a, y);
  return y;
}

Tensor cached_cast(const Tensor& a, DType dtype) {
  MT_CHECK_SHAPE(a.defined(), "cached_cast: input is undefined");
  if (a.dtype() == dtype || !is_floating(dtype) || !is_floating(a.dtype())) return cast(a, dtype);
  TensorImpl& im = a.impl();
  const std::shared_ptr<TensorImpl>& c = im.converted;
  const bool fresh = c && c->dtype == dtype && c->shape == im.shape && im.storage &&
                     c->storage->device() == im.storage->device() && im.converted_version == im.storage->version();
  Tensor y;
  if (fresh) {
    y = Tensor(c).detach();  // a new handle on the copy: this use's autograd history is its own
  } else {
    y = a.to(dtype).contiguous();  // reads a (a data() call), so the version is taken after it
    im.converted = y.detach().impl_ptr();
    im.converted_version = im.storage ? im.storage->version() : 0;
  }
  if (any_requires_grad({&a})) {
    record_cast(a, y);
    // The GEMMs that read this copy may write its gradient in f32: the master then takes it without a round trip.
    if (a.dtype() == DType::F32 && is_half(dtype)) y.impl().autograd->grad_may_be_f32 = true;
  }
  return y;
}

Tensor dropout(const Tensor& a, double p, bool training, Generator& gen) {
  ops::check_float("dropout", "input", a);
  MT_CHECK_SHAPE(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return identity("dropout", a);
  // The mask is a function of (seed, offset, element index): the backward regenerates it instead of storing it.
  const uint64_t seed = gen.seed(), offset = gen.reserve(static_cast<uint64_t>(a.numel()));
  Tensor y = dropout_raw(a, p, seed, offset);
  if (any_requires_grad({&a})) {
    const DType dt = a.dtype();
    record_node(make_lambda_node("dropout",
                                 [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   return {dropout_raw(as_dtype(g[0], dt), p, seed, offset)};
                                 }),
                {a}, {y});
  }
  return y;
}

}  // namespace mt
