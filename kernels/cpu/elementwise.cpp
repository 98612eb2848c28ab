// CPU reference for the elementwise kernels (kernels/elementwise.h): plain loops over float / double, OpenMP over
// rows of the innermost dimension for large tensors.
#include "kernels/elementwise.h"

#include "core/error.h"
#include "core/rng.h"

namespace mt::kernels {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save

// Call f(i, ia, ib) for every output index i with the element offsets of a and b.
template <typename F>
void for_each_broadcast(const BroadcastLayout& L, F&& f) {
  const int64_t n = L.numel;
  if (n == 0) return;
  if (L.ndim == 0) {
    f(int64_t{0}, int64_t{0}, int64_t{0});
    return;
  }
  if (L.contiguous) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) f(i, i, i);
    return;
  }
  const int last = L.ndim - 1;
  const int64_t inner = L.shape[last], sa = L.a_strides[last], sb = L.b_strides[last];
  const int64_t rows = n / inner;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    // Unravel the row index over dims [0, last) into offsets of a and b.
    int64_t rem = r, oa = 0, ob = 0;
    for (int d = last - 1; d >= 0; --d) {
      const int64_t idx = rem % L.shape[d];
      rem /= L.shape[d];
      oa += idx * L.a_strides[d];
      ob += idx * L.b_strides[d];
    }
    const int64_t base = r * inner;
    for (int64_t j = 0; j < inner; ++j) f(base + j, oa + j * sa, ob + j * sb);
  }
}

template <typename T>
void binary_fwd(const BinaryParams& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  const BinaryOp op = p.op;
  for_each_broadcast(p.layout, [&](int64_t i, int64_t ia, int64_t ib) { out[i] = ew::binary<T>(op, a[ia], b[ib]); });
}

template <typename T>
void binary_bwd(const BinaryBwdParams& p) {
  const T* g = static_cast<const T*>(p.g);
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* ga = static_cast<T*>(p.ga);
  T* gb = static_cast<T*>(p.gb);
  const bool mul = p.op == BinaryOp::Mul;
  for_each_broadcast(p.layout, [&](int64_t i, int64_t ia, int64_t ib) {
    const T gi = g[i], av = a ? a[ia] : T(0), bv = b ? b[ib] : T(0);  // an operand no requested grad reads is null
    if (mul) {
      if (ga) ga[i] = gi * bv;
      if (gb) gb[i] = gi * av;
    } else {
      if (ga) ga[i] = gi / bv;
      if (gb) gb[i] = -gi * av / (bv * bv);
    }
  });
}

template <typename T>
void unary_fwd(const UnaryParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const T alpha = static_cast<T>(p.alpha), beta = static_cast<T>(p.beta);
  const UnaryOp op = p.op;
#pragma omp parallel for schedule(static) if (p.numel >= kParallelMin)
  for (int64_t i = 0; i < p.numel; ++i) y[i] = ew::unary_fwd<T>(op, x[i], alpha, beta);
}

template <typename T>
void unary_bwd(const UnaryBwdParams& p) {
  const T* g = static_cast<const T*>(p.g);
  const T* s = static_cast<const T*>(p.saved);
  T* gx = static_cast<T*>(p.gx);
  const T alpha = static_cast<T>(p.alpha);
  const UnaryOp op = p.op;
#pragma omp parallel for schedule(static) if (p.numel >= kParallelMin)
  for (int64_t i = 0; i < p.numel; ++i) gx[i] = ew::unary_bwd<T>(op, g[i], s ? s[i] : T(0), alpha);
}

template <typename T>
void dropout_apply(const DropoutParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const T scale = static_cast<T>(1.0 / (1.0 - p.p));  // inf when p == 1, but then nothing is kept
#pragma omp parallel for schedule(static) if (p.numel >= kParallelMin)
  for (int64_t i = 0; i < p.numel; ++i) {
    const bool keep = static_cast<double>(Philox::uniform(p.seed, p.offset, static_cast<uint64_t>(i))) >= p.p;
    y[i] = keep ? x[i] * scale : T(0);
  }
}

template <typename P, typename FF, typename FD>
void dispatch(const char* name, const P& p, FF&& f32, FD&& f64) {
  switch (p.dtype) {
    case DType::F32: return f32(p);
    case DType::F64: return f64(p);
    default: throw Error(ErrorKind::Internal, str(name, ": CPU kernel takes f32 or f64, got ", dtype_name(p.dtype)));
  }
}

}  // namespace

void binary_fwd_cpu(const BinaryParams& p) { dispatch("binary_fwd_cpu", p, binary_fwd<float>, binary_fwd<double>); }
void binary_bwd_cpu(const BinaryBwdParams& p) { dispatch("binary_bwd_cpu", p, binary_bwd<float>, binary_bwd<double>); }
void unary_fwd_cpu(const UnaryParams& p) { dispatch("unary_fwd_cpu", p, unary_fwd<float>, unary_fwd<double>); }
void unary_bwd_cpu(const UnaryBwdParams& p) { dispatch("unary_bwd_cpu", p, unary_bwd<float>, unary_bwd<double>); }
void dropout_apply_cpu(const DropoutParams& p) {
  dispatch("dropout_apply_cpu", p, dropout_apply<float>, dropout_apply<double>);
}

}  // namespace mt::kernels
