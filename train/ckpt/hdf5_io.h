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
// An HDF5 file written a block of rows at a time, holding one block in memory: 2-D f32 datasets [rows, width] and
// 1-D i64 datasets that grow along their first dimension (chunked, unlimited). Built under a unique temporary name
// next to `path`; finish() closes, fsyncs and renames it over `path`. Destroyed unfinished (an exception), the
// temporary file is removed and `path` is untouched. Errors: mt::Error(Io) naming the path.
class H5RowWriter {
 public:
  explicit H5RowWriter(const std::string& path);
  ~H5RowWriter();
  H5RowWriter(const H5RowWriter&) = delete;
  H5RowWriter& operator=(const H5RowWriter&) = delete;
  // Creates an empty dataset: width > 0 gives f32 [0, width], width 0 gives i64 [0].
  void add_dataset(const std::string& name, int64_t width);
  // Appends `rows` rows (f32: rows x width values; i64: rows values).
  void append(const std::string& name, const float* values, int64_t rows);
  void append(const std::string& name, const int64_t* values, int64_t rows);
  void finish();

 private:
  struct Impl;
  Impl* impl_;
};

// Read one dataset back as f64 / its shape (tests and tools).
std::vector<double> read_h5_dataset(const std::string& path, const std::string& name, Shape* shape = nullptr);

}  // namespace mt::train
