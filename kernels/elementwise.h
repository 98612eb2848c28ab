// Elementwise kernels behind autograd/ops/elementwise.h: broadcast binary ops, unary activations, dropout.
//
// Binary (numpy broadcasting; the op layer computes the layout):
//   out[i] = a[off_a(i)] op b[off_b(i)]     i over the output shape in row-major order,
//   off_x(i) = sum_k idx_k(i) * x_strides[k]  with stride 0 on broadcast dims.
//   backward (mul / div only; add / sub need no kernel):
//     mul: ga = g * b,  gb = g * a          div: ga = g / b,  gb = -g * a / b^2
//   both computed at the output shape in one pass; the op layer then sums them back to the input shapes.
// Unary (contiguous x, y):
//   affine y = alpha x + beta (add_scalar, mul_scalar, neg)       d/dx = alpha
//   exp      y = e^x                                               d/dx = y
//   log      y = ln x                                              d/dx = 1 / x
//   sigmoid  y = 1 / (1 + e^-x)                                    d/dx = y (1 - y)
//   silu     y = x sigmoid(x)                                      d/dx = s (1 + x (1 - s)),  s = sigmoid(x)
//   softplus y = ln(1 + e^x), y = x for x > 20 (PyTorch)           d/dx = sigmoid(x), 1 for x > 20
//   tanh     y = tanh x                                            d/dx = 1 - y^2
//   sqrt     y = sqrt x                                            d/dx = 1 / (2 y)
//   square   y = x^2                                               d/dx = 2 x
//   The backward reads the saved input or the saved output, whichever gives f' cheapest (unary_bwd_uses_output).
// Dropout (inverted; contiguous x, y): keep_i = Philox::uniform(seed, offset, i) >= p,
//   y_i = keep_i ? x_i / (1 - p) : 0.  The backward applies the very same mask to g (same seed / offset), so the
//   one kernel serves both directions and the mask is never stored.
//
// Storage dtype: f32, f64, bf16, f16. Math runs in double for f64 and in float otherwise (the CPU kernels see only
// f32 / f64: the op layer converts bf16 / f16 through f32 copies, rounding once at the end exactly like the GPU).
#pragma once

#include <math.h>

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

constexpr int kEwMaxDims = 8;

enum class BinaryOp : int32_t { Add = 0, Sub = 1, Mul = 2, Div = 3 };

// The output index space and how a and b are read from it. Dims of size 1 are dropped and adjacent dims merged
// where both inputs allow it, so [B, L, D] + [D] becomes [B*L, D] with b strides {0, 1}.
struct BroadcastLayout {
  int64_t numel = 0;
  int ndim = 0;  // 0: a single element (numel 1) or nothing (numel 0)
  int64_t shape[kEwMaxDims] = {};
  int64_t a_strides[kEwMaxDims] = {};  // elements; 0 on broadcast dims
  int64_t b_strides[kEwMaxDims] = {};
  // a, b and out are all packed with the output's shape (out[i] = a[i] op b[i]): the fast path.
  bool contiguous = false;
};

struct BinaryParams {
  const void* a = nullptr;  // element 0 of each view
  const void* b = nullptr;
  void* out = nullptr;  // packed, output shape
  DType dtype = DType::F32;
  BinaryOp op = BinaryOp::Add;
  BroadcastLayout layout;
};

struct BinaryBwdParams {
  const void* g = nullptr;  // packed, output shape
  const void* a = nullptr;  // read through layout strides; may be null when no requested gradient reads it
  const void* b = nullptr;  // (mul: ga reads only b, gb only a; div: ga reads b, gb reads a and b)
  void* ga = nullptr;       // packed, output shape; null: not needed
  void* gb = nullptr;
  DType dtype = DType::F32;
  BinaryOp op = BinaryOp::Mul;  // Mul or Div
  BroadcastLayout layout;
};

enum class UnaryOp : int32_t { Affine = 0, Exp, Log, Sigmoid, Silu, Softplus, Tanh, Sqrt, Square };

struct UnaryParams {
  const void* x = nullptr;  // packed
  void* y = nullptr;        // packed
  DType dtype = DType::F32;
  UnaryOp op = UnaryOp::Exp;
  int64_t numel = 0;
  double alpha = 1.0, beta = 0.0;  // Affine only
};

struct UnaryBwdParams {
  const void* g = nullptr;      // packed
  const void* saved = nullptr;  // x or y (see unary_bwd_uses_output); unused for Affine
  void* gx = nullptr;           // packed
  DType dtype = DType::F32;
  UnaryOp op = UnaryOp::Exp;
  int64_t numel = 0;
  double alpha = 1.0;  // Affine only
};

struct DropoutParams {
  const void* x = nullptr;  // packed (x forward, g backward)
  void* y = nullptr;        // packed
  DType dtype = DType::F32;
  int64_t numel = 0;
  double p = 0.0;  // drop probability in [0, 1]
  uint64_t seed = 0, offset = 0;
};

// Which tensor the backward of op wants saved: true = the output y, false = the input x.
MT_HD bool unary_bwd_uses_output(UnaryOp op) {
  return op == UnaryOp::Exp || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Sqrt;
}

// ---- scalar math shared verbatim by the CPU and CUDA kernels (C math functions exist on both sides) ----
namespace ew {
MT_HD float exp_(float x) { return ::expf(x); }
MT_HD double exp_(double x) { return ::exp(x); }
MT_HD float log_(float x) { return ::logf(x); }
MT_HD double log_(double x) { return ::log(x); }
MT_HD float log1p_(float x) { return ::log1pf(x); }
MT_HD double log1p_(double x) { return ::log1p(x); }
MT_HD float tanh_(float x) { return ::tanhf(x); }
MT_HD double tanh_(double x) { return ::tanh(x); }
MT_HD float sqrt_(float x) { return ::sqrtf(x); }
MT_HD double sqrt_(double x) { return ::sqrt(x); }

// Stable logistic: never evaluates e^x for large positive x.
template <typename C>
MT_HD C sigmoid(C x) {
  if (x >= C(0)) return C(1) / (C(1) + exp_(-x));
  const C e = exp_(x);
  return e / (C(1) + e);
}

template <typename C>
MT_HD C binary(BinaryOp op, C a, C b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    default: return a / b;
  }
}

template <typename C>
MT_HD C unary_fwd(UnaryOp op, C x, C alpha, C beta) {
  switch (op) {
    case UnaryOp::Affine: return alpha * x + beta;
    case UnaryOp::Exp: return exp_(x);
    case UnaryOp::Log: return log_(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Silu: return x * sigmoid(x);
    // ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|) never overflows; PyTorch's threshold: identity above 20.
    case UnaryOp::Softplus: return x > C(20) ? x : (x > C(0) ? x : C(0)) + log1p_(exp_(x > C(0) ? -x : x));
    case UnaryOp::Tanh: return tanh_(x);
    case UnaryOp::Sqrt: return sqrt_(x);
    default: return x * x;  // Square
  }
}

// g * f'(.) from s = the saved input or output (unary_bwd_uses_output).
template <typename C>
MT_HD C unary_bwd(UnaryOp op, C g, C s, C alpha) {
  switch (op) {
    case UnaryOp::Affine: return g * alpha;
    case UnaryOp::Exp: return g * s;
    case UnaryOp::Log: return g / s;
    case UnaryOp::Sigmoid: return g * s * (C(1) - s);
    case UnaryOp::Silu: {
      const C sg = sigmoid(s);
      return g * sg * (C(1) + s * (C(1) - sg));
    }
    case UnaryOp::Softplus: return s > C(20) ? g : g * sigmoid(s);
    case UnaryOp::Tanh: return g * (C(1) - s * s);
    case UnaryOp::Sqrt: return g / (C(2) * s);
    default: return g * C(2) * s;  // Square
  }
}
}  // namespace ew

void binary_fwd_cpu(const BinaryParams& p);
void binary_bwd_cpu(const BinaryBwdParams& p);
void unary_fwd_cpu(const UnaryParams& p);
void unary_bwd_cpu(const UnaryBwdParams& p);
void dropout_apply_cpu(const DropoutParams& p);  // forward on x, backward on g

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
void binary_fwd_cuda(const BinaryParams& p);
void binary_bwd_cuda(const BinaryBwdParams& p);
void unary_fwd_cuda(const UnaryParams& p);
void unary_bwd_cuda(const UnaryBwdParams& p);
void dropout_apply_cuda(const DropoutParams& p);

}  // namespace mt::kernels
