// Writing named tensors into an HDF5 file (used by `mamba-train forward --out`).
// Names may contain '/' to make groups ("grad/backbone.norm_f.weight"). The file is built under a unique temporary
// name in the target directory, closed, fsynced and renamed over the target, so a crash never leaves a partial
// file under the final name (docs/DESIGN.md F1, F2). H5dont_atexit() is called before any other HDF5 call (F3).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mt::train {

// Tensors are written in their dtype (bf16 / f16 converted to f32; HDF5 has no bf16).
void write_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& datasets);
// Read one dataset back as f64 / its shape (tests and tools).
std::vector<double> read_h5_dataset(const std::string& path, const std::string& name, Shape* shape = nullptr);

}  // namespace mt::train
