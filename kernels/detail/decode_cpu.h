// Storage access for the CPU references of the decode kernels. Unlike the training kernels (f32 / f64 only, the
// autograd op converts), these read and write every float dtype themselves and round intermediate values to the
// storage dtype exactly where the CUDA kernels store them, so that a bf16 / f16 run on the CPU reproduces the GPU's
// roundings (up to summation order).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"

namespace mt::kernels::decode {

// C: compute type; load / store element i; round: the value after a store and a load. float and double are their
// own compute type; the 16-bit types below compute in float.
template <typename T>
struct Storage {
  using C = T;
  static T load(const T* p, int64_t i) { return p[i]; }
  static void store(T* p, int64_t i, T v) { p[i] = v; }
  static T round(T v) { return v; }
};
template <>
struct Storage<bf16_t> {
  using C = float;
  static float load(const bf16_t* p, int64_t i) { return bf16_to_float(p[i].bits); }
  static void store(bf16_t* p, int64_t i, float v) { p[i].bits = float_to_bf16(v); }
  static float round(float v) { return bf16_to_float(float_to_bf16(v)); }
};
template <>
struct Storage<f16_t> {
  using C = float;
  static float load(const f16_t* p, int64_t i) { return f16_to_float(p[i].bits); }
  static void store(f16_t* p, int64_t i, float v) { p[i].bits = float_to_f16(v); }
  static float round(float v) { return f16_to_float(float_to_f16(v)); }
};

template <typename T>
struct Tag {
  using type = T;
};

// Call f(Tag<T>{}) with T the host storage type of a float dtype.
template <typename F>
void dispatch_storage(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::F64: f(Tag<double>{}); return;
    case DType::BF16: f(Tag<bf16_t>{}); return;
    case DType::F16: f(Tag<f16_t>{}); return;
    default: throw Error(ErrorKind::Shape, str(what, ": needs a float dtype, got ", dtype_name(dt)));
  }
}

}  // namespace mt::kernels::decode
