// A reference-counted block of memory on one device. Tensors share a Storage and view it through
// shape / strides / offset.
//
// Version: every call to data() counts as a possible write and advances version(). Handing out the address is the
// only way to reach the memory, so a cache derived from the contents (a parameter's bf16 copy for the GEMMs,
// TensorImpl::converted) is fresh exactly while the version it recorded is still current; it costs a reader no more
// than a cache miss. Code that keeps a raw pointer must not write through it after another data() call has been
// made on the storage (the usual rule for raw pointers; nothing in the library does).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"

namespace mt {

class Storage {
 public:
  Storage(size_t bytes, Device dev) : bytes_(bytes), device_(dev), data_(bytes ? alloc_bytes(bytes, dev) : nullptr) {}
  ~Storage() {
    if (data_) free_bytes(data_, bytes_, device_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const {
    version_.fetch_add(1, std::memory_order_relaxed);
    return data_;
  }
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  size_t bytes_;
  Device device_;
  void* data_;
  mutable std::atomic<uint64_t> version_{0};
};

}  // namespace mt
