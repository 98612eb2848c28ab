// Differentiable shape ops: views built with as_strided (no data moves) except where a copy is unavoidable
// (reshape of a non-contiguous tensor, concat, split, flip). No kernels of their own: Tensor::copy_ / copy_strided
// handle any strides, with negative ones, on CPU and CUDA.
//
// Backwards: reshape -> reshape back; transpose -> the same transpose; permute -> the inverse permutation;
// unsqueeze <-> squeeze; slice -> zeros of the input's shape with the gradient copied into the sliced region;
// concat -> slices (views) of the gradient; split -> the parts' gradients copied into one tensor; flip -> flip.
// Gradients these backwards return may be strided views of the upstream gradient (like PyTorch's); consumers call
// .contiguous() where their kernels need packed data.
// Shape ops accept any dtype (integer ids / targets are reshaped too); only float inputs take part in autograd.
#include "autograd/ops/shape_ops.h"

#include <algorithm>

#include "autograd/ops/op_util.h"

namespace mt {

namespace {

void check_defined(const char* op, const Tensor& a) { MT_CHECK_SHAPE(a.defined(), op, ": input is undefined"); }

// Resolve one -1 in `shape` against numel, with errors naming the op and both shapes.
Shape resolve_shape(const char* op, const Shape& shape, const Tensor& a) {
  Shape s = shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MT_CHECK_SHAPE(infer < 0, op, ": more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MT_CHECK_SHAPE(s[i] >= 0, op, ": bad dimension ", s[i], " in ", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MT_CHECK_SHAPE(known > 0 && a.numel() % known == 0, op, ": cannot infer -1 in ", shape_str(shape), " for ",
                   a.describe());
    s[infer] = a.numel() / known;
  }
  MT_CHECK_SHAPE(shape_numel(s) == a.numel(), op, ": shape ", shape_str(shape), " does not match the ", a.numel(),
                 " elements of ", a.describe());
  return s;
}

Tensor raw_reshape(const Tensor& a, const Shape& s) { return a.is_contiguous() ? a.view(s) : a.clone().view(s); }

Tensor raw_transpose(const Tensor& a, int64_t d0, int64_t d1) {
  Shape sh = a.shape(), st = a.strides();
  std::swap(sh[d0], sh[d1]);
  std::swap(st[d0], st[d1]);
  return a.as_strided(sh, st, a.offset());
}

Tensor raw_permute(const Tensor& a, const std::vector<int64_t>& perm) {
  Shape sh(perm.size()), st(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) {
    sh[i] = a.shape()[perm[i]];
    st[i] = a.strides()[perm[i]];
  }
  return a.as_strided(sh, st, a.offset());
}

Tensor raw_unsqueeze(const Tensor& a, int64_t d) {
  Shape sh = a.shape(), st = a.strides();
  const int64_t stride = d < a.dim() ? st[d] * sh[d] : 1;
  sh.insert(sh.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return a.as_strided(sh, st, a.offset());
}

Tensor raw_squeeze(const Tensor& a, int64_t d) {
  Shape sh = a.shape(), st = a.strides();
  sh.erase(sh.begin() + d);
  st.erase(st.begin() + d);
  return a.as_strided(sh, st, a.offset());
}

// The view of `a` with dim reversed (a negative stride); the copy makes it packed.
Tensor raw_flip(const Tensor& a, int64_t d) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.numel() == 0) return out;
  Shape st = a.strides();
  const int64_t off = a.offset() + (a.shape()[d] - 1) * st[d];
  st[d] = -st[d];
  out.copy_(a.as_strided(a.shape(), st, off));
  return out;
}

// Elements start, start+step, ... of dim d of `a` as a view.
Tensor raw_slice(const Tensor& a, int64_t d, int64_t start, int64_t len, int64_t step) {
  Shape sh = a.shape(), st = a.strides();
  const int64_t off = a.offset() + (len > 0 ? start * st[d] : 0);
  sh[d] = len;
  st[d] *= step;
  return a.as_strided(sh, st, off);
}

}  // namespace

Tensor reshape(const Tensor& a, const Shape& shape) {
  check_defined("reshape", a);
  const Shape s = resolve_shape("reshape", shape, a);
  Tensor out = raw_reshape(a, s);
  if (any_requires_grad({&a})) {
    const Shape in_shape = a.shape();
    record_node(make_lambda_node("reshape",
                                 [in_shape](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   return {raw_reshape(g[0], in_shape)};
                                 }),
                {a}, {out});
  }
  return out;
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  check_defined("transpose", a);
  if (a.dim() == 0) {
    ops::wrap_dim("transpose", d0, 0);
    ops::wrap_dim("transpose", d1, 0);
    return contiguous(a);  // a scalar: identity
  }
  d0 = ops::wrap_dim("transpose", d0, a.dim());
  d1 = ops::wrap_dim("transpose", d1, a.dim());
  Tensor out = raw_transpose(a, d0, d1);
  if (any_requires_grad({&a})) {
    record_node(make_lambda_node("transpose",
                                 [d0, d1](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   return {raw_transpose(g[0], d0, d1)};
                                 }),
                {a}, {out});
  }
  return out;
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims) {
  check_defined("permute", a);
  const int64_t n = a.dim();
  MT_CHECK_SHAPE(static_cast<int64_t>(dims.size()) == n, "permute: ", dims.size(), " dims given for ", a.describe());
  std::vector<int64_t> perm(dims.size()), inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    perm[i] = ops::wrap_dim("permute", dims[i], n);
    MT_CHECK_SHAPE(inverse[perm[i]] < 0, "permute: dimension ", dims[i], " repeated in the permutation of ",
                   a.describe());
    inverse[perm[i]] = static_cast<int64_t>(i);
  }
  Tensor out = raw_permute(a, perm);
  if (any_requires_grad({&a})) {
    record_node(make_lambda_node("permute",
                                 [inverse](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   return {raw_permute(g[0], inverse)};
                                 }),
                {a}, {out});
  }
  return out;
}

Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_defined("slice", a);
  MT_CHECK_SHAPE(a.dim() >= 1, "slice: needs at least one dimension, got ", a.describe());
  const int64_t d = ops::wrap_dim("slice", dim, a.dim());
  MT_CHECK_SHAPE(step >= 1, "slice: step must be >= 1, got ", step);
  const int64_t n = a.shape()[d];
  // Python semantics: negative indices count from the end, then both ends clamp to [0, n].
  auto norm = [n](int64_t i) { return std::min(std::max(i < 0 ? i + n : i, int64_t(0)), n); };
  const int64_t s = norm(start), e = norm(end);
  const int64_t len = e > s ? (e - s + step - 1) / step : 0;
  Tensor out = raw_slice(a, d, s, len, step);
  if (any_requires_grad({&a})) {
    const Shape in_shape = a.shape();
    const DType dt = a.dtype();
    const Device dev = a.device();
    record_node(
        make_lambda_node("slice",
                         [in_shape, dt, dev, d, s, len, step](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                           Tensor da = Tensor::zeros(in_shape, dt, dev);
                           raw_slice(da, d, s, len, step).copy_(g[0]);
                           return {da};
                         }),
        {a}, {out});
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& parts, int64_t dim) {
  MT_CHECK_SHAPE(!parts.empty(), "concat: no tensors given");
  std::vector<const Tensor*> ptrs;
  for (size_t i = 0; i < parts.size(); ++i) {
    MT_CHECK_SHAPE(parts[i].defined(), "concat: part ", i, " is undefined");
    ptrs.push_back(&parts[i]);
  }
  ops::check_same("concat", ptrs);
  const Tensor& first = parts[0];
  MT_CHECK_SHAPE(first.dim() >= 1, "concat: parts need at least one dimension, got ", first.describe());
  const int64_t d = ops::wrap_dim("concat", dim, first.dim());
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    bool ok = p.dim() == first.dim();
    for (int64_t k = 0; ok && k < p.dim(); ++k) ok = k == d || p.shape()[k] == first.shape()[k];
    MT_CHECK_SHAPE(ok, "concat along dim ", dim, ": part ", i, " ", shape_str(p.shape()), " does not match part 0 ",
                   shape_str(first.shape()), " outside that dim");
    out_shape[d] += p.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const Tensor& p : parts) {
    starts.push_back(at);
    if (p.numel() > 0) raw_slice(out, d, at, p.shape()[d], 1).copy_(p);
    at += p.shape()[d];
  }
  if (any_requires_grad(parts)) {
    std::vector<int64_t> sizes;
    for (const Tensor& p : parts) sizes.push_back(p.shape()[d]);
    std::vector<bool> need;
    for (const Tensor& p : parts) need.push_back(requires_grad(p));
    record_node(make_lambda_node("concat",
                                 [d, starts, sizes, need](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                                   std::vector<Tensor> out(sizes.size());
                                   for (size_t i = 0; i < sizes.size(); ++i)
                                     if (need[i]) out[i] = raw_slice(g[0], d, starts[i], sizes[i], 1);
                                   return out;
                                 }),
                parts, {out});
  }
  return out;
}

std::vector<Tensor> split(const Tensor& a, int64_t dim, const std::vector<int64_t>& sizes, bool views) {
  check_defined("split", a);
  MT_CHECK_SHAPE(a.dim() >= 1, "split: needs at least one dimension, got ", a.describe());
  const int64_t d = ops::wrap_dim("split", dim, a.dim());
  int64_t total = 0;
  for (int64_t n : sizes) {
    MT_CHECK_SHAPE(n >= 0, "split: negative size ", n);
    total += n;
  }
  MT_CHECK_SHAPE(total == a.shape()[d], "split: sizes sum to ", total, ", dim ", dim, " of ", a.describe(), " has ",
                 a.shape()[d]);
  std::vector<Tensor> parts;
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (int64_t n : sizes) {
    starts.push_back(at);
    const Tensor piece = raw_slice(a, d, at, n, 1);
    parts.push_back(views ? piece : piece.contiguous());
    at += n;
  }
  if (any_requires_grad({&a})) {
    const Shape in_shape = a.shape();
    const DType dt = a.dtype();
    const Device dev = a.device();
    // Each part's gradient lands in its own region of one uninitialised tensor: no zero fill, no sum of
    // full-size gradients (what a slice per part would cost).
    record_node(make_lambda_node("split",
                                 [in_shape, dt, dev, d, starts, sizes](const std::vector<Tensor>& g) {
                                   Tensor da = Tensor::empty(in_shape, dt, dev);
                                   for (size_t i = 0; i < sizes.size(); ++i) {
                                     if (sizes[i] == 0) continue;
                                     const Tensor region = raw_slice(da, d, starts[i], sizes[i], 1);
                                     if (g[i].defined())
                                       region.copy_(g[i]);
                                     else
                                       region.fill_(0.0);
                                   }
                                   return std::vector<Tensor>{da};
                                 }),
                {a}, parts);
  }
  return parts;
}

Tensor flip(const Tensor& a, int64_t dim) {
  check_defined("flip", a);
  MT_CHECK_SHAPE(a.dim() >= 1, "flip: needs at least one dimension, got ", a.describe());
  const int64_t d = ops::wrap_dim("flip", dim, a.dim());
  Tensor out = raw_flip(a, d);
  if (any_requires_grad({&a})) {
    record_node(make_lambda_node(
                    "flip", [d](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {raw_flip(g[0], d)}; }),
                {a}, {out});
  }
  return out;
}

Tensor unsqueeze(const Tensor& a, int64_t dim) {
  check_defined("unsqueeze", a);
  const int64_t d = dim < 0 ? dim + a.dim() + 1 : dim;
  MT_CHECK_SHAPE(d >= 0 && d <= a.dim(), "unsqueeze: dimension ", dim, " out of range for ", a.describe());
  Tensor out = raw_unsqueeze(a, d);
  if (any_requires_grad({&a})) {
    record_node(
        make_lambda_node("unsqueeze",
                         [d](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {raw_squeeze(g[0], d)}; }),
        {a}, {out});
  }
  return out;
}

Tensor squeeze(const Tensor& a, int64_t dim) {
  check_defined("squeeze", a);
  MT_CHECK_SHAPE(a.dim() >= 1, "squeeze: needs at least one dimension, got ", a.describe());
  const int64_t d = ops::wrap_dim("squeeze", dim, a.dim());
  MT_CHECK_SHAPE(a.shape()[d] == 1, "squeeze: dimension ", dim, " of ", a.describe(), " has size ", a.shape()[d],
                 ", expected 1");
  Tensor out = raw_squeeze(a, d);
  if (any_requires_grad({&a})) {
    record_node(
        make_lambda_node("squeeze",
                         [d](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {raw_unsqueeze(g[0], d)}; }),
        {a}, {out});
  }
  return out;
}

Tensor contiguous(const Tensor& a) {
  check_defined("contiguous", a);
  Tensor out = a.is_contiguous() ? a.detach() : a.clone();
  if (any_requires_grad({&a})) {
    record_node(
        make_lambda_node("contiguous", [](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {g[0]}; }), {a},
        {out});
  }
  return out;
}

}  // namespace mt
