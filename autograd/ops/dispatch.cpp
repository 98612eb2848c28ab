#include "autograd/ops/dispatch.h"

namespace mt::ops {

void no_cuda(const char* op) {
  throw Error(ErrorKind::Device, str(op, ": tensor is on CUDA but this mamba-train was built without CUDA support"));
}

}  // namespace mt::ops
