// Device dispatch for the differentiable ops (and the optimizer): which kernel of kernels/<op>.h runs, the CPU
// kernels' dtype convention, and CPU-only builds.
//
// Every kernel comes as a pair, kernels::<name>_cpu and kernels::<name>_cuda. The CUDA one is declared in every build
// and defined (kernels/cuda/) only in CUDA builds, so code names it through MT_CUDA_KERNEL(<name>_cuda): the function
// in a CUDA build, a null pointer of its type in a CPU-only build, where calling it through Dispatch::run or
// run_cuda is an mt::Error(Device) naming the op ("... built without CUDA support").
//
// CPU kernels read and write f32 / f64 only. A Dispatch made for the op's device and CPU compute dtype hands each
// tensor to the kernel in the dtype it reads (input: bf16 / f16 data becomes an f32 copy on the CPU), allocates what
// the kernel writes (output), and converts a result back to its storage dtype (result). On CUDA the kernels take
// every float dtype as it is stored, and these three leave tensors as they are. The op code is then the same for
// both devices:
//   const ops::Dispatch d("op", x);                        // x's device; CPU compute dtype f32 (f64 for f64 x)
//   const Tensor xc = d.input(x).contiguous();
//   Tensor y = d.output(x.shape(), x.dtype());
//   p.x = xc.data_ptr(), p.y = y.data_ptr(), p.dtype = d.kernel_dtype(x.dtype());
//   d.run(kernels::op_fwd_cpu, MT_CUDA_KERNEL(op_fwd_cuda), p);
//   return d.result(y, x.dtype());
#pragma once

#include <utility>

#include "core/dtype.h"
#include "core/op_timer.h"
#include "core/tensor.h"

// kernels::fn (a CUDA entry point) in a CUDA build; a null pointer of its type in a CPU-only build. decltype does not
// odr-use fn, so a CPU-only build links without the kernels/cuda/ definitions.
#if defined(MT_WITH_CUDA)
#define MT_CUDA_KERNEL(fn) (&::mt::kernels::fn)
#else
#define MT_CUDA_KERNEL(fn) (static_cast<decltype(&::mt::kernels::fn)>(nullptr))
#endif

namespace mt::ops {

// The mt::Error(Device) for a CUDA tensor in a build without CUDA: "<op>: tensor is on CUDA but ...".
[[noreturn]] void no_cuda(const char* op);

// cuda(args...), or no_cuda(op) when cuda is null (MT_CUDA_KERNEL in a CPU-only build).
template <class Fn, class... Args>
decltype(auto) run_cuda(const char* op, Fn* cuda, Args&&... args) {
  if (cuda == nullptr) no_cuda(op);
  const OpTimeScope timed(op, /*cuda=*/true);
  return cuda(std::forward<Args>(args)...);
}

// The dtype the CPU kernels compute in for data stored as dt: f64 stays f64, every other float dtype runs in f32.
inline DType cpu_compute_dtype(DType dt) { return dt == DType::F64 ? DType::F64 : DType::F32; }

class Dispatch {
 public:
  // op names the errors; the kernels run on dev; compute is the CPU kernels' dtype (unused on CUDA).
  Dispatch(const char* op, Device dev, DType compute) : op_(op), dev_(dev), compute_(compute) {}
  // The device and the CPU compute dtype (cpu_compute_dtype) of the op's leading input.
  Dispatch(const char* op, const Tensor& lead) : Dispatch(op, lead.device(), cpu_compute_dtype(lead.dtype())) {}

  const char* op() const { return op_; }
  bool cpu() const { return dev_.is_cpu(); }
  Device device() const { return dev_; }
  // The dtype a kernel reads or writes for data stored as dt: the compute dtype on the CPU, dt itself on CUDA.
  DType kernel_dtype(DType dt) const { return cpu() ? compute_ : dt; }
  // t as the kernel reads it: on the CPU converted to the compute dtype (t itself when it is already), on CUDA t.
  // Undefined stays undefined; the layout is t's when nothing is converted (call .contiguous() where needed).
  Tensor input(const Tensor& t) const { return t.defined() && cpu() ? t.to(compute_) : t; }
  // A fresh buffer for a kernel output stored as dt: kernel_dtype(dt) on the op's device.
  Tensor output(const Shape& shape, DType dt) const { return Tensor::empty(shape, kernel_dtype(dt), dev_); }
  // A kernel output r in its storage dtype dt: converted where the kernel wrote another dtype (the CPU's compute
  // dtype), else r itself. Undefined stays undefined.
  Tensor result(const Tensor& r, DType dt) const { return r.defined() && r.dtype() != dt ? r.to(dt) : r; }
  // Where a kernel writes into an existing tensor dst: dst itself when the kernel writes dst's dtype, else a fresh
  // compute-dtype buffer of dst's shape that write_back copies into dst.
  Tensor output_into(const Tensor& dst) const {
    return kernel_dtype(dst.dtype()) == dst.dtype() ? dst : Tensor::empty(dst.shape(), compute_, dev_);
  }
  void write_back(const Tensor& buf, const Tensor& dst) const {
    if (!buf.same(dst)) dst.copy_(buf);
  }

  // cpu(args...) on the CPU, run_cuda(op, cuda, args...) on CUDA. Both kernels return the same type.
  template <class CpuFn, class CudaFn, class... Args>
  decltype(auto) run(CpuFn* cpu_fn, CudaFn* cuda_fn, Args&&... args) const {
    if (cpu()) {
      const OpTimeScope timed(op_, /*cuda=*/false);
      return cpu_fn(std::forward<Args>(args)...);
    }
    return run_cuda(op_, cuda_fn, std::forward<Args>(args)...);
  }

 private:
  const char* op_;
  Device dev_;
  DType compute_;
};

}  // namespace mt::ops
