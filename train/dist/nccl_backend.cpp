// The NCCL gradient backend (train/dist/grad_sync.h): compiled when CMake found NCCL next to CUDA (MT_WITH_NCCL).
#if defined(MT_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/cuda_context.h"
#include "core/error.h"
#include "train/dist/grad_sync.h"

namespace mt::train {

namespace {

using Clock = std::chrono::steady_clock;

class NcclBackend : public GradBackend {
 public:
  NcclBackend(ControlPlane& cp, Device dev) : cp_(cp), dev_(dev), rank_(cp.rank()), world_(cp.world_size()) {
    ::setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off (the device docs), unless the user chose
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::vector<uint8_t> b(sizeof id);
    std::memcpy(b.data(), &id, sizeof id);
    b = cp.broadcast(b, "NCCL unique id");
    MT_CHECK(b.size() == sizeof id, ErrorKind::Distributed, "rank ", rank_, ": NCCL unique id of ", b.size(),
             " bytes from rank 0, expected ", sizeof id, " (another NCCL version on rank 0?)");
    std::memcpy(&id, b.data(), sizeof id);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns; progress and errors are polled with our deadline (never a hang)
    check(ncclCommInitRankConfig(&comm_, world_, id, rank_, &config), "ncclCommInitRankConfig");
    settle("communicator initialisation", cp.timeout_s());
    cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }

  ~NcclBackend() override {
    for (auto& bk : buckets_) {
      if (bk.packed) cudaEventDestroy(bk.packed);
      if (bk.done) cudaEventDestroy(bk.done);
    }
    if (comm_) ncclCommAbort(comm_);  // frees it; never blocks on a dead peer
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }

  void launch(int b, const std::vector<Tensor>& grads) override {
    if (static_cast<size_t>(b) >= buckets_.size()) buckets_.resize(static_cast<size_t>(b) + 1);
    Bucket& bk = buckets_[static_cast<size_t>(b)];
    int64_t n = 0;
    for (const Tensor& g : grads) n += g.numel();
    if (!bk.flat.defined() || bk.flat.numel() != n) {
      bk.flat = Tensor::empty({n}, DType::F32, dev_);
      if (!bk.packed) cudaCheck(cudaEventCreateWithFlags(&bk.packed, cudaEventDisableTiming), "cudaEventCreate");
      if (!bk.done) cudaCheck(cudaEventCreateWithFlags(&bk.done, cudaEventDisableTiming), "cudaEventCreate");
    }
    int64_t off = 0;
    for (const Tensor& g : grads) {  // pack on the compute stream, where the gradients were produced
      bk.flat.as_strided({g.numel()}, {1}, off).view(g.shape()).copy_(g);
      off += g.numel();
    }
    bk.grads = grads;
    cudaStream_t compute = CudaContext::get().stream();
    cudaCheck(cudaEventRecord(bk.packed, compute), "cudaEventRecord");
    cudaCheck(cudaStreamWaitEvent(stream_, bk.packed, 0), "cudaStreamWaitEvent");
    check(ncclAllReduce(bk.flat.data_ptr(), bk.flat.data_ptr(), static_cast<size_t>(n), ncclFloat32, ncclSum, comm_,
                        stream_),
          str("all-reduce of gradient bucket ", b));
    settle(str("all-reduce of gradient bucket ", b), cp_.timeout_s());
    cudaCheck(cudaEventRecord(bk.done, stream_), "cudaEventRecord");
    bk.launched = true;
  }

  // The watchdog: polls each bucket's completion and the communicator's asynchronous error until the deadline;
  // past it the communicator is aborted (NCCL would spin forever on a dead peer) and the rank fails with exit 8.
  void wait_all() override {
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(cp_.timeout_s() * 1000));
    cudaStream_t compute = CudaContext::get().stream();
    for (size_t b = 0; b < buckets_.size(); ++b) {
      Bucket& bk = buckets_[b];
      if (!bk.launched) continue;
      for (;;) {
        const cudaError_t q = cudaEventQuery(bk.done);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady)
          fail(str("all-reduce of gradient bucket ", b, ": CUDA error ", cudaGetErrorString(q)));
        ncclResult_t st = ncclSuccess;
        ncclCommGetAsyncError(comm_, &st);
        if (st != ncclSuccess && st != ncclInProgress)
          fail(str("all-reduce of gradient bucket ", b, ": ", ncclGetErrorString(st), " (", ncclGetLastError(comm_),
                   ")"));
        if (Clock::now() >= deadline)
          fail(str("all-reduce of gradient bucket ", b, " did not complete within ", cp_.timeout_s(),
                   " s (distributed.timeout_s): a peer rank died, hangs or is in another step"));
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      cudaCheck(cudaStreamWaitEvent(compute, bk.done, 0), "cudaStreamWaitEvent");
      int64_t off = 0;
      for (const Tensor& g : bk.grads) {  // unpack on the compute stream
        g.copy_(bk.flat.as_strided({g.numel()}, {1}, off).view(g.shape()));
        off += g.numel();
      }
      bk.grads.clear();
      bk.launched = false;
    }
  }

 private:
  struct Bucket {
    Tensor flat;
    std::vector<Tensor> grads;
    cudaEvent_t packed = nullptr, done = nullptr;
    bool launched = false;
  };

  [[noreturn]] void fail(const std::string& what) {
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    throw_error(ErrorKind::Distributed, str("rank ", rank_, " of ", world_, ": NCCL ", what, "; communicator aborted"));
  }
  void check(ncclResult_t r, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    fail(str(what, ": ", ncclGetErrorString(r), comm_ ? str(" (", ncclGetLastError(comm_), ")") : std::string()));
  }
  void cudaCheck(cudaError_t e, const char* what) {
    if (e != cudaSuccess) fail(str(what, ": ", cudaGetErrorString(e)));
  }
  // A non-blocking communicator's call is done when its asynchronous state leaves ncclInProgress.
  void settle(const std::string& what, double timeout_s) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    for (;;) {
      ncclResult_t st = ncclInProgress;
      ncclCommGetAsyncError(comm_, &st);
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail(str(what, ": ", ncclGetErrorString(st), " (", ncclGetLastError(comm_), ")"));
      if (Clock::now() >= deadline)
        fail(str(what, " did not finish within ", timeout_s, " s (distributed.timeout_s): a peer rank died or hangs"));
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  ControlPlane& cp_;
  Device dev_;
  int rank_, world_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<Bucket> buckets_;
};

}  // namespace

std::unique_ptr<GradBackend> make_nccl_backend(ControlPlane& cp, Device dev, int64_t /*total_numel*/) {
  return std::make_unique<NcclBackend>(cp, dev);
}

}  // namespace mt::train
#endif
