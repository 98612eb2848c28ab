// Tensor: a view (shape, strides, offset in elements) of a reference-counted Storage, with a dtype and a device.
// Copies of a Tensor share the same TensorImpl (like a shared_ptr); view ops (reshape of contiguous data,
// transpose, slice) make new TensorImpls over the same Storage.
//
// Autograd state lives in an AutogradMeta (defined in autograd/) that core only holds a pointer to, so that core
// does not depend on autograd. Use the functions in autograd/autograd.h (requires_grad, grad, backward).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/storage.h"

namespace mt {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

struct AutogradMeta;  // autograd/tape.h

// While on, every fresh tensor (Tensor::empty, so every op output) has its memory filled with 0xFF bytes, NaN in
// every float dtype, so a kernel that leaves part of an output unwritten shows up. On by default in Debug builds;
// the op tests turn it on in any build.
void set_poison_fresh_memory(bool on);
bool poison_fresh_memory();

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  std::shared_ptr<AutogradMeta> autograd;  // null unless the tensor takes part in autograd
  // A converted copy of this view (contiguous, same shape, another dtype): the bf16 / f16 weights the GEMMs read
  // from an f32 master. Fresh while storage->version() == converted_version; cached_cast (autograd/ops) makes and
  // reuses it, AdamW rewrites it in the kernel that updates the master. Null when there is none.
  std::shared_ptr<TensorImpl> converted;
  uint64_t converted_version = 0;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories (empty's memory is uninitialised: poisoned with 0xFF bytes while poison_fresh_memory()) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::F32, Device dev = Device::cpu());  // shape []
  // Copy host values into a new tensor (converting to dtype).
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32,
                            Device dev = Device::cpu());
  static Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape, DType dtype = DType::I64,
                                Device dev = Device::cpu());
  // Uniform in [lo, hi) / standard normal (Box-Muller) from the counter-based generator; identical on CPU and GPU.
  static Tensor rand(const Shape& shape, Generator& gen, double lo = 0.0, double hi = 1.0, DType dtype = DType::F32,
                     Device dev = Device::cpu());
  static Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0, DType dtype = DType::F32,
                      Device dev = Device::cpu());
  // Integers uniform in [lo, hi).
  static Tensor randint(const Shape& shape, Generator& gen, int64_t lo, int64_t hi, DType dtype = DType::I64,
                        Device dev = Device::cpu());

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage ? impl().storage->device() : Device::cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string describe() const;  // "f32[2, 3] on cpu"

  // ---- data access ----
  void* data_ptr() const;  // address of element 0 of this view
  template <typename T>
  T* data() const {
    MT_CHECK_SHAPE(dtype_of<T>::value == dtype(), "tensor is ", dtype_name(dtype()), ", accessed as ",
                   dtype_name(dtype_of<T>::value));
    return static_cast<T*>(data_ptr());
  }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl& impl() const {
    MT_CHECK_SHAPE(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- copies and views (not recorded by autograd; see autograd/ops for differentiable versions) ----
  Tensor contiguous() const;              // this if already contiguous, else a packed copy
  Tensor clone() const;                   // packed copy, always new storage
  Tensor to(Device dev) const;            // same tensor if already there
  Tensor to(DType dt) const;              // converting copy (this if same dtype)
  Tensor view(const Shape& shape) const;  // contiguous only; one dim may be -1
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  Tensor detach() const;  // same data, no autograd history
  // Copy src (any device / dtype / strides, same numel and shape) into this view.
  void copy_(const Tensor& src) const;
  void fill_(double value) const;
  void zero_() const { fill_(0.0); }

  // ---- host inspection (tests, logging); synchronises with the GPU ----
  std::vector<double> to_vector() const;  // values in row-major order
  std::vector<int64_t> to_vector_i64() const;
  double item() const;  // numel() == 1

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Low-level strided copy with conversion, same device (dispatches to the CPU loop or the CUDA kernel).
void copy_strided(const Tensor& dst, const Tensor& src);

}  // namespace mt
