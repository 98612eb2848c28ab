// mamba-train bench kernels (train/cli/bench_kernels.cpp): selective-scan timings against the device's copy rate.
#pragma once

namespace mt::train {

// Prints the table; returns the exit code. mt::Error(Device) without a GPU or in a CPU-only build.
int run_kernel_bench();

}  // namespace mt::train
