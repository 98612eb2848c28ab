#include "core/tensor.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "core/op_timer.h"
#include "core/random_formulas.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda/tensor_kernels.h"
#include "core/cuda_check.h"
#include "core/cuda_context.h"
#endif

namespace mt {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

namespace {

#if defined(NDEBUG)
std::atomic<bool> g_poison_fresh{false};
#else
std::atomic<bool> g_poison_fresh{true};
#endif

}  // namespace

void set_poison_fresh_memory(bool on) { g_poison_fresh.store(on, std::memory_order_relaxed); }
bool poison_fresh_memory() { return g_poison_fresh.load(std::memory_order_relaxed); }

namespace {

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device dev) {
  for (int64_t d : shape) MT_CHECK_SHAPE(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), dev);
  if (poison_fresh_memory() && impl->storage->bytes()) {
    if (dev.is_cpu()) {
      std::memset(impl->storage->data(), 0xFF, impl->storage->bytes());
    } else {
#if defined(MT_WITH_CUDA)
      MT_CUDA_CHECK(cudaMemsetAsync(impl->storage->data(), 0xFF, impl->storage->bytes(), CudaContext::get().stream()));
#endif
    }
  }
  return impl;
}

#if defined(MT_WITH_CUDA)
cuda::StridedDesc desc_of(const Tensor& t) {
  MT_CHECK_SHAPE(t.dim() <= cuda::kMaxDims, "CUDA tensors support at most ", cuda::kMaxDims, " dims, got ",
                 shape_str(t.shape()));
  cuda::StridedDesc d;
  d.ndim = static_cast<int>(t.dim());
  for (int i = 0; i < d.ndim; ++i) {
    d.shape[i] = t.shape()[i];
    d.strides[i] = t.strides()[i];
  }
  return d;
}
#endif

// ---- typed CPU copy ----
template <typename T>
struct Conv;
template <>
struct Conv<float> {
  static double get(float v) { return v; }
  static float put(double v) { return static_cast<float>(v); }
};
template <>
struct Conv<double> {
  static double get(double v) { return v; }
  static double put(double v) { return v; }
};
template <>
struct Conv<int32_t> {
  static double get(int32_t v) { return v; }
  static int32_t put(double v) { return static_cast<int32_t>(v); }
};
template <>
struct Conv<int64_t> {
  static double get(int64_t v) { return static_cast<double>(v); }
  static int64_t put(double v) { return static_cast<int64_t>(v); }
};
template <>
struct Conv<bf16_t> {
  static double get(bf16_t v) { return bf16_to_float(v.bits); }
  static bf16_t put(double v) { return bf16_t{float_to_bf16(static_cast<float>(v))}; }
};
template <>
struct Conv<f16_t> {
  static double get(f16_t v) { return f16_to_float(v.bits); }
  static f16_t put(double v) { return f16_t{float_to_f16(static_cast<float>(v))}; }
};

template <typename D, typename S>
D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, int64_t> && std::is_same_v<S, int32_t>) {
    return v;
  } else if constexpr (std::is_same_v<D, int32_t> && std::is_same_v<S, int64_t>) {
    return static_cast<int32_t>(v);
  } else {
    return Conv<D>::put(Conv<S>::get(v));
  }
}

// Iterate the common shape in row-major order, tracking both element offsets incrementally.
template <typename D, typename S>
void copy_loop(D* dst, const Shape& dst_st, const S* src, const Shape& src_st, const Shape& shape) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const int nd = static_cast<int>(shape.size());
  if (nd == 0) {
    dst[0] = convert<D>(src[0]);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  int64_t od = 0, os = 0;
  const int last = nd - 1;
  const int64_t inner = shape[last], sd = dst_st[last], ss = src_st[last];
  for (int64_t done = 0; done < n; done += inner) {
    for (int64_t j = 0; j < inner; ++j) dst[od + j * sd] = convert<D>(src[os + j * ss]);
    for (int d = last - 1; d >= 0; --d) {
      ++idx[d];
      od += dst_st[d];
      os += src_st[d];
      if (idx[d] < shape[d]) break;
      od -= dst_st[d] * shape[d];
      os -= src_st[d] * shape[d];
      idx[d] = 0;
    }
  }
}

template <typename D>
void copy_from(const Tensor& dst, const Tensor& src) {
  D* d = static_cast<D*>(dst.data_ptr());
  switch (src.dtype()) {
    case DType::F32:
      return copy_loop(d, dst.strides(), static_cast<const float*>(src.data_ptr()), src.strides(), dst.shape());
    case DType::F64:
      return copy_loop(d, dst.strides(), static_cast<const double*>(src.data_ptr()), src.strides(), dst.shape());
    case DType::BF16:
      return copy_loop(d, dst.strides(), static_cast<const bf16_t*>(src.data_ptr()), src.strides(), dst.shape());
    case DType::F16:
      return copy_loop(d, dst.strides(), static_cast<const f16_t*>(src.data_ptr()), src.strides(), dst.shape());
    case DType::I32:
      return copy_loop(d, dst.strides(), static_cast<const int32_t*>(src.data_ptr()), src.strides(), dst.shape());
    case DType::I64:
      return copy_loop(d, dst.strides(), static_cast<const int64_t*>(src.data_ptr()), src.strides(), dst.shape());
  }
}

void copy_cpu(const Tensor& dst, const Tensor& src) {
  if (dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype()) {
    if (dst.nbytes()) std::memmove(dst.data_ptr(), src.data_ptr(), dst.nbytes());
    return;
  }
  switch (dst.dtype()) {
    case DType::F32: return copy_from<float>(dst, src);
    case DType::F64: return copy_from<double>(dst, src);
    case DType::BF16: return copy_from<bf16_t>(dst, src);
    case DType::F16: return copy_from<f16_t>(dst, src);
    case DType::I32: return copy_from<int32_t>(dst, src);
    case DType::I64: return copy_from<int64_t>(dst, src);
  }
}

void require_cuda_build() {
  MT_CHECK(built_with_cuda(), ErrorKind::Device, "this mamba-train was built without CUDA support");
}

}  // namespace

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  MT_CHECK_SHAPE(d >= 0 && d < n, "dimension ", d, " out of range for ", describe());
  return shape()[d];
}

int64_t Tensor::stride(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  MT_CHECK_SHAPE(d >= 0 && d < n, "dimension ", d, " out of range for ", describe());
  return strides()[d];
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] != 1 && strides()[i] != expect) return false;
    expect *= shape()[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return str(dtype_name(dtype()), shape_str(shape()), " on ", device().str());
}

void* Tensor::data_ptr() const {
  auto& im = impl();
  if (!im.storage || !im.storage->data()) return nullptr;
  return static_cast<char*>(im.storage->data()) + im.offset * static_cast<int64_t>(dtype_size(im.dtype));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) { return Tensor(make_impl(shape, dtype, dev)); }

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) { return full(shape, 0.0, dtype, dev); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device dev) { return full(shape, 1.0, dtype, dev); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device dev) { return full({}, value, dtype, dev); }

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device dev) {
  MT_CHECK_SHAPE(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                 " values for shape ", shape_str(shape));
  Tensor host = empty(shape, dtype, Device::cpu());
  for (size_t i = 0; i < values.size(); ++i)
    store_from_double(host.data_ptr(), dtype, static_cast<int64_t>(i), values[i]);
  return host.to(dev);
}

Tensor Tensor::from_vector_i64(const std::vector<int64_t>& values, const Shape& shape, DType dtype, Device dev) {
  MT_CHECK_SHAPE(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector_i64: ", values.size(),
                 " values for shape ", shape_str(shape));
  Tensor host = empty(shape, DType::I64, Device::cpu());
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(int64_t));
  return host.to(dtype).to(dev);
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, double lo, double hi, DType dtype, Device dev) {
  MT_CHECK_SHAPE(is_floating(dtype), "rand needs a floating dtype, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype, dev);
  const int64_t n = t.numel();
  const uint64_t off = gen.reserve(static_cast<uint64_t>(n));
  if (dev.is_cuda()) {
#if defined(MT_WITH_CUDA)
    cuda::fill_uniform(t.data_ptr(), dtype, n, gen.seed(), off, lo, hi);
#else
    require_cuda_build();
#endif
    return t;
  }
  const bool f64 = dtype == DType::F64;
  for (int64_t i = 0; i < n; ++i)
    store_from_double(t.data_ptr(), dtype, i, rng_uniform(f64, gen.seed(), off, i, lo, hi));
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype, Device dev) {
  MT_CHECK_SHAPE(is_floating(dtype), "randn needs a floating dtype, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype, dev);
  const int64_t n = t.numel();
  const uint64_t off = gen.reserve(2 * static_cast<uint64_t>(n));
  if (dev.is_cuda()) {
#if defined(MT_WITH_CUDA)
    cuda::fill_normal(t.data_ptr(), dtype, n, gen.seed(), off, mean, std);
#else
    require_cuda_build();
#endif
    return t;
  }
  const bool f64 = dtype == DType::F64;
  for (int64_t i = 0; i < n; ++i)
    store_from_double(t.data_ptr(), dtype, i, rng_normal(f64, gen.seed(), off, i, mean, std));
  return t;
}

Tensor Tensor::randint(const Shape& shape, Generator& gen, int64_t lo, int64_t hi, DType dtype, Device dev) {
  MT_CHECK_SHAPE(hi > lo, "randint needs hi > lo, got [", lo, ", ", hi, ")");
  Tensor t = empty(shape, dtype, dev);
  const int64_t n = t.numel();
  const uint64_t off = gen.reserve(static_cast<uint64_t>(n));
  if (dev.is_cuda()) {
#if defined(MT_WITH_CUDA)
    cuda::fill_randint(t.data_ptr(), dtype, n, gen.seed(), off, lo, hi);
#else
    require_cuda_build();
#endif
    return t;
  }
  for (int64_t i = 0; i < n; ++i)
    store_from_double(t.data_ptr(), dtype, i, static_cast<double>(rng_randint(gen.seed(), off, i, lo, hi)));
  return t;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (device() == dev) return *this;
  Tensor out = empty(shape(), dtype(), dev);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dtype() == dt) return *this;
  Tensor out = empty(shape(), dt, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::view(const Shape& new_shape) const {
  MT_CHECK_SHAPE(is_contiguous(), "view of a non-contiguous tensor ", describe(), " (use reshape)");
  Shape s = new_shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MT_CHECK_SHAPE(infer < 0, "view: more than one -1 in ", shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else {
      MT_CHECK_SHAPE(s[i] >= 0, "view: bad dimension in ", shape_str(new_shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MT_CHECK_SHAPE(known > 0 && numel() % known == 0, "view: cannot infer -1 in ", shape_str(new_shape), " for ",
                   describe());
    s[infer] = numel() / known;
  }
  MT_CHECK_SHAPE(shape_numel(s) == numel(), "view: shape ", shape_str(new_shape), " does not match ", describe());
  return as_strided(s, contiguous_strides(s), offset());
}

Tensor Tensor::as_strided(const Shape& new_shape, const Shape& new_strides, int64_t new_offset) const {
  MT_CHECK_SHAPE(new_shape.size() == new_strides.size(), "as_strided: shape and strides differ in length");
  auto im = std::make_shared<TensorImpl>();
  im->storage = impl().storage;
  im->shape = new_shape;
  im->strides = new_strides;
  im->offset = new_offset;
  im->dtype = dtype();
  return Tensor(im);
}

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

namespace {

// The name a copy, cast or fill is timed under (bench --breakdown): its kind, then the dtypes and shape, so the
// breakdown can list the largest ones. Built only while a timer is installed.
std::string timed_name(const char* kind, const Tensor& dst, const Tensor* src) {
  if (op_timer() == nullptr) return kind;
  const bool cast = src && src->dtype() != dst.dtype();
  std::string s = std::string(kind) + " " + (cast ? dtype_name(src->dtype()) : "") + (cast ? " -> " : "") +
                  dtype_name(dst.dtype()) + shape_str(dst.shape());
  if (src && (!src->is_contiguous() || !dst.is_contiguous())) s += " strided";
  return s;
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  MT_CHECK_SHAPE(dst.device() == src.device(), "copy_strided across devices");
  // Copies and casts outside the ops (bench --breakdown).
  const std::string name = timed_name(dst.dtype() == src.dtype() ? "tensor_copy" : "tensor_cast", dst, &src);
  OpTimeScope timed(name.c_str(), dst.device().is_cuda());
  if (dst.device().is_cpu()) return copy_cpu(dst, src);
#if defined(MT_WITH_CUDA)
  cuda::strided_copy(dst.data_ptr(), dst.dtype(), desc_of(dst), src.data_ptr(), src.dtype(), desc_of(src), dst.numel());
#else
  require_cuda_build();
#endif
}

void Tensor::copy_(const Tensor& src) const {
  MT_CHECK_SHAPE(shape() == src.shape(), "copy_: shape ", shape_str(src.shape()), " into ", shape_str(shape()));
  if (numel() == 0) return;
  if (device() == src.device()) return copy_strided(*this, src);
#if defined(MT_WITH_CUDA)
  // Across devices: move packed bytes of the source dtype, then convert / scatter on the destination device.
  Tensor packed_src = src.contiguous();
  Tensor staging = (is_contiguous() && dtype() == src.dtype()) ? *this : empty(shape(), src.dtype(), device());
  auto kind = device().is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  auto stream = CudaContext::get().stream();
  MT_CUDA_CHECK(cudaMemcpyAsync(staging.data_ptr(), packed_src.data_ptr(), packed_src.nbytes(), kind, stream));
  // Host memory is pageable: wait before the host reads it (D2H) or before the source may be freed (H2D).
  MT_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (!staging.same(*this)) copy_strided(*this, staging);
#else
  require_cuda_build();
#endif
}

void Tensor::fill_(double value) const {
  if (numel() == 0) return;
  const std::string name = timed_name("tensor_fill", *this, nullptr);
  OpTimeScope timed(name.c_str(), device().is_cuda());
  if (device().is_cpu()) {
    Tensor one = empty({}, DType::F64, Device::cpu());
    *static_cast<double*>(one.data_ptr()) = value;
    Shape zero_strides(dim(), 0);
    copy_cpu(*this, one.as_strided(shape(), zero_strides, 0));
    return;
  }
#if defined(MT_WITH_CUDA)
  cuda::fill(data_ptr(), dtype(), desc_of(*this), numel(), value);
#else
  require_cuda_build();
#endif
}

std::vector<double> Tensor::to_vector() const {
  Tensor host = to(Device::cpu()).contiguous();
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = load_as_double(host.data_ptr(), dtype(), i);
  return out;
}

std::vector<int64_t> Tensor::to_vector_i64() const {
  Tensor host = to(Device::cpu()).to(DType::I64).contiguous();
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  if (numel()) std::memcpy(out.data(), host.data_ptr(), out.size() * sizeof(int64_t));
  return out;
}

double Tensor::item() const {
  MT_CHECK_SHAPE(numel() == 1, "item() of ", describe(), " (needs exactly one element)");
  return to_vector()[0];
}

}  // namespace mt
