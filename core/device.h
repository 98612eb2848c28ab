// Where a tensor lives. CUDA devices are indexed; this build drives one GPU per process (data parallelism runs
// one process per GPU).
#pragma once

#include <cstdint>
#include <string>

namespace mt {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (type == DeviceType::CPU || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

  static Device cpu() { return Device{DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return Device{DeviceType::CUDA, i}; }
  // "cpu", "cuda", "cuda:N"; throws mt::Error(Usage) otherwise.
  static Device parse(const std::string& s);
};

// True when this binary was built with CUDA and at least one GPU is visible.
bool cuda_available();
// True when this binary was compiled with CUDA support.
bool built_with_cuda();
// A user's device name: "auto" is cuda when available, else cpu; "cpu", "cuda", "cuda:N" as Device::parse, and a
// CUDA device without a visible GPU (or a CPU-only build) is mt::Error(Device).
Device resolve_device(const std::string& name);
// Wait until the device has finished the work queued so far (the CUDA context's stream; nothing on the CPU), and
// report an asynchronous kernel error as mt::Error.
void synchronize(Device dev);

}  // namespace mt
