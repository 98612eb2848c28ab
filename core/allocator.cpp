#include "core/allocator.h"
#include "core/fault_hook.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/error.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_context.h"
#endif

namespace mt {

namespace {

void* host_alloc(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  // Harness site "alloc": a host allocation that fails (as on an exhausted machine).
  void* p = fault_point("alloc", static_cast<int64_t>(bytes)) ? nullptr : std::aligned_alloc(64, rounded);
  MT_CHECK(p != nullptr, ErrorKind::OutOfMemory, "out of host memory: could not allocate ", bytes,
           " bytes (try a smaller trainer.micro_batch_size at the same trainer.global_batch_size, or a "
           "shorter data.seq_len)");
  return p;
}

#if defined(MT_WITH_CUDA)
// Size classes: small requests round to 512 B, large ones (>= 1 MiB) to 2 MiB.
size_t round_size(size_t bytes) {
  if (bytes < (1u << 20)) return (bytes + 511) / 512 * 512;
  return (bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20);
}

class CudaCachingAllocator {
 public:
  void* allocate(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.num_allocations;
    const size_t size = round_size(bytes);
    // Best fit among cached blocks of exactly this class or up to 2x larger (avoids wasting big blocks).
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= 2 * size) {
      void* p = it->second;
      live_[p] = it->first;
      stats_.allocated_bytes += static_cast<int64_t>(it->first);
      free_.erase(it);
      bump_peak();
      return p;
    }
    void* p = nullptr;
    cudaError_t st = cudaMalloc(&p, size);
    if (st == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cache_locked();
      st = cudaMalloc(&p, size);
    }
    if (st == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error(ErrorKind::OutOfMemory, str("CUDA out of memory: tried to allocate ", bytes, " bytes (", bytes >> 20,
                                              " MiB); ", stats_.allocated_bytes >> 20, " MiB in use by tensors, ",
                                              free_b >> 20, " MiB free of ", total_b >> 20,
                                              " MiB on the device (try a smaller trainer.micro_batch_size at the same "
                                              "trainer.global_batch_size, or a shorter data.seq_len)"));
    }
    MT_CUDA_CHECK(st);
    ++stats_.num_device_mallocs;
    stats_.cached_bytes += static_cast<int64_t>(size);
    stats_.allocated_bytes += static_cast<int64_t>(size);
    live_[p] = size;
    bump_peak();
    return p;
  }

  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    MT_ASSERT(it != live_.end(), "freeing a CUDA pointer the allocator does not own");
    stats_.allocated_bytes -= static_cast<int64_t>(it->second);
    free_.emplace(it->second, p);
    live_.erase(it);
  }

  CudaMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cache_locked();
  }

 private:
  void bump_peak() {
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }
  void release_cache_locked() {
    if (free_.empty()) return;
    // Blocks may still be read by queued kernels: wait for the stream before returning them to the driver.
    MT_CUDA_CHECK(cudaStreamSynchronize(CudaContext::get().stream()));
    for (auto& kv : free_) {
      MT_CUDA_CHECK(cudaFree(kv.second));
      stats_.cached_bytes -= static_cast<int64_t>(kv.first);
      ++stats_.num_device_frees;
    }
    free_.clear();
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  CudaMemoryStats stats_;
};

// Intentionally leaked: tensors with static lifetime may be freed after main returns, when a destroyed
// allocator (or an unloaded driver) would fail. The driver reclaims device memory at process exit.
CudaCachingAllocator& cuda_allocator() {
  static auto* a = new CudaCachingAllocator();
  return *a;
}
#endif

}  // namespace

void* alloc_bytes(size_t bytes, Device dev) {
  if (dev.is_cpu()) return host_alloc(bytes);
#if defined(MT_WITH_CUDA)
  CudaContext::get();  // make sure the device is initialised
  return cuda_allocator().allocate(bytes);
#else
  throw Error(ErrorKind::Device, "this mamba-train was built without CUDA support");
#endif
}

void free_bytes(void* p, size_t, Device dev) {
  if (dev.is_cpu()) {
    std::free(p);
    return;
  }
#if defined(MT_WITH_CUDA)
  cuda_allocator().release(p);
#endif
}

CudaMemoryStats cuda_memory_stats() {
#if defined(MT_WITH_CUDA)
  return cuda_allocator().stats();
#else
  return {};
#endif
}

void cuda_reset_peak_memory() {
#if defined(MT_WITH_CUDA)
  cuda_allocator().reset_peak();
#endif
}

void cuda_empty_cache() {
#if defined(MT_WITH_CUDA)
  cuda_allocator().empty_cache();
#endif
}

}  // namespace mt
