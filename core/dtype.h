// Element types. Storage may be f32, f64, bf16, f16, i32 or i64; floating math always runs in f32 (or f64 for
// f64 tensors). bf16 / f16 are plain 16-bit values with round-to-nearest-even conversions so that CPU tests
// can produce exactly what the GPU stores.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define MT_HD __host__ __device__ __forceinline__
#else
#define MT_HD inline
#endif

namespace mt {

enum class DType : uint8_t { F32 = 0, F64 = 1, BF16 = 2, F16 = 3, I32 = 4, I64 = 5 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                 // "f32", "f64", "bf16", "f16", "i32", "i64"
DType dtype_from_name(const std::string& name);  // throws mt::Error(Usage) on an unknown name
inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16; }
inline bool is_half(DType t) { return t == DType::BF16 || t == DType::F16; }

// ---- host-side 16-bit float conversions (bit-exact with CUDA's __float2bfloat16_rn / __float2half_rn) ----
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

MT_HD float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
MT_HD uint16_t float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);

// Compile-time mapping from C++ type to DType.
template <typename T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::F64;
};
template <>
struct dtype_of<bf16_t> {
  static constexpr DType value = DType::BF16;
};
template <>
struct dtype_of<f16_t> {
  static constexpr DType value = DType::F16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::I32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::I64;
};

// Read element i of a buffer of dtype t as double / write a double into it (host; tests and slow paths only).
double load_as_double(const void* p, DType t, int64_t i);
void store_from_double(void* p, DType t, int64_t i, double v);

}  // namespace mt
