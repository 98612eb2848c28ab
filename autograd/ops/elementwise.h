// Differentiable elementwise ops. Binary ops broadcast numpy-style (shapes aligned from the right; size-1 dims
// stretch); the backward sums the gradient back to each input's shape. Both inputs must share device and dtype
// (float dtypes; f64 everywhere, f32 / bf16 / f16 computed in f32).
#pragma once

#include "core/tensor.h"

namespace mt {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);  // a + s
Tensor mul_scalar(const Tensor& a, double s);  // a * s
Tensor neg(const Tensor& a);

Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor silu(const Tensor& a);      // a * sigmoid(a)
Tensor softplus(const Tensor& a);  // log(1 + exp(a)), computed stably (a for a > 20, as PyTorch)
Tensor tanh(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor square(const Tensor& a);

// Differentiable dtype conversion (gradient converted back to the input dtype).
Tensor cast(const Tensor& a, DType dtype);

// cast(a, dtype) for a float -> float conversion that keeps its result with a (TensorImpl::converted) and returns
// it again, without converting, while a's storage has not been touched since (Storage::version): a parameter's
// bf16 copy is made once per optimizer step (by AdamW, see optim/adamw.h) instead of once per use. The values and
// the gradient are cast's; only a itself (not a view or another handle's impl) holds the copy.
Tensor cached_cast(const Tensor& a, DType dtype);

// Inverted dropout: zero with probability p, scale kept elements by 1/(1-p). Identity when !training or p == 0.
// The mask comes from the counter-based generator, so CPU and GPU drop the same elements.
Tensor dropout(const Tensor& a, double p, bool training, Generator& gen);

// Broadcast shape of a and b, or an mt::Error(Shape) naming both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }

}  // namespace mt
