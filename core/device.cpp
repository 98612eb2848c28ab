#include "core/device.h"

#include "core/error.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_context.h"
#endif

namespace mt {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    bool digits = !idx.empty() && idx.size() < 4;
    for (char c : idx) digits = digits && c >= '0' && c <= '9';
    if (digits) return cuda(std::stoi(idx));
  }
  throw_error(ErrorKind::Usage, mt::str("unknown device '", s, "' (expected cpu, cuda or cuda:N)"));
}

bool built_with_cuda() {
#if defined(MT_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#if defined(MT_WITH_CUDA)
  static const bool available = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error
      return false;
    }
    return n > 0;
  }();
  return available;
#else
  return false;
#endif
}

Device resolve_device(const std::string& name) {
  if (name == "auto") return cuda_available() ? Device::cuda() : Device::cpu();
  Device d = Device::parse(name);
  MT_CHECK(!d.is_cuda() || cuda_available(), ErrorKind::Device, "--device ", name, ": ",
           built_with_cuda() ? "no CUDA device is visible" : "this mamba-train was built without CUDA");
  return d;
}

void synchronize(Device dev) {
#if defined(MT_WITH_CUDA)
  if (dev.is_cuda()) CudaContext::get().synchronize();
#else
  (void)dev;
#endif
}

}  // namespace mt
