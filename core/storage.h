// A reference-counted block of memory on one device. Tensors share a Storage and view it through
// shape / strides / offset.
#pragma once

#include <cstddef>
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

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  size_t bytes_;
  Device device_;
  void* data_;
};

}  // namespace mt
