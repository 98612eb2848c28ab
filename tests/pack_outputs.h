// Test helper: a differentiable "flatten and concatenate" of two tensors (any devices' shared one, any float
// dtypes), so that one gradcheck / one backward covers an op's two outputs at once. Written with core copies and
// a lambda node, so it depends on no other op.
#pragma once

#include "autograd/autograd.h"
#include "core/tensor.h"

namespace mt::test {

// out = concat(flatten(a), flatten(b)) in dtype `dt`; a or b may have zero elements.
inline Tensor pack_outputs(const Tensor& a, const Tensor& b, DType dt) {
  const int64_t na = a.numel(), nb = b.numel();
  Tensor out = Tensor::empty({na + nb}, dt, a.device());
  if (na) out.as_strided({na}, {1}, out.offset()).copy_(a.contiguous().view({na}));
  if (nb) out.as_strided({nb}, {1}, out.offset() + na).copy_(b.contiguous().view({nb}));
  if (any_requires_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    const DType da = a.dtype(), db = b.dtype();
    auto node = make_lambda_node("test_pack_outputs", [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      const Tensor gc = g[0].contiguous();
      auto part = [&](int64_t off, int64_t n, const Shape& s, DType d) {
        if (n == 0) return Tensor::zeros(s, d, gc.device());
        return gc.as_strided({n}, {1}, gc.offset() + off).to(d).clone().view(s);
      };
      Tensor ga = part(0, na, sa, da), gb = part(na, nb, sb, db);
      return {ga, gb};
    });
    record_node(node, {a, b}, {out});
  }
  return out;
}

}  // namespace mt::test
