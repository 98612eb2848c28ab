// Memory for tensor storage.
//
// CPU: 64-byte aligned host memory.
// CUDA: a caching allocator. Freed blocks go back to size-bucketed free lists and are reused by later requests of
// the same rounded size, so a training step in steady state makes no cudaMalloc / cudaFree calls. All work runs on
// the one stream of the CUDA context, so a block freed by the host can be handed out again immediately: any later
// kernel that writes it is ordered after the kernels that used it before.
// Sizes are rounded up to 512 B (small) or 2 MiB (>= 1 MiB) so that slightly different requests share blocks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace mt {

void* alloc_bytes(size_t bytes, Device dev);
void free_bytes(void* p, size_t bytes, Device dev);

struct CudaMemoryStats {
  int64_t allocated_bytes = 0;       // held by live tensors now
  int64_t peak_allocated_bytes = 0;  // maximum of allocated_bytes since the last reset
  int64_t cached_bytes = 0;          // obtained from cudaMalloc and not returned (allocated + free in cache)
  int64_t num_device_mallocs = 0;    // cudaMalloc calls so far (steady-state tests check this stops growing)
  int64_t num_device_frees = 0;
  int64_t num_allocations = 0;  // allocation requests so far, served from the cache or not (a code region that must
                                // not allocate, such as a CUDA graph capture, checks that this does not move)
};

CudaMemoryStats cuda_memory_stats();
void cuda_reset_peak_memory();
// Return all cached, unused blocks to the driver.
void cuda_empty_cache();

}  // namespace mt
