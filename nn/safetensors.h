// HuggingFace safetensors files: read (with full validation of the header) and write (atomically).
//
// Format (https://github.com/huggingface/safetensors, docs/DESIGN.md "HuggingFace names and files"):
//   bytes [0, 8)        N: header length, unsigned 64-bit little-endian
//   bytes [8, 8+N)      JSON object {name: {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
//                                    "__metadata__": {key: value, ...}}   (metadata values are strings)
//   bytes [8+N, EOF)    the data; each tensor's bytes are [8+N+begin, 8+N+end), row-major, little-endian.
// Supported dtypes: F32, F64, BF16, F16, I32, I64 (the others - BOOL, U8, I8, F8_* ... - are rejected by name).
//
// Every problem with a file being read is an mt::Error(ErrorKind::Checkpoint) naming the file and, where there is
// one, the tensor. Problems writing are mt::Error(ErrorKind::Io) naming the path and the system's reason.
#pragma once

#include <map>
#include <string>

#include "core/tensor.h"

namespace mt {

// All tensors of the file, by name, as contiguous CPU tensors of the stored dtype.
// Validates: the file exists and is a readable regular file; it holds at least the 8-byte length; the header
// length is <= 100 MB and fits in the file; the header is valid JSON and an object; every entry is an object with
// "dtype" (a known string), "shape" (non-negative integers, numel not absurd), "data_offsets" ([begin, end],
// begin <= end, end - begin == numel * dtype size, end within the data); no two entries' bytes overlap;
// "__metadata__", when present, maps strings to strings.
std::map<std::string, Tensor> load_safetensors(const std::string& path);

// The "__metadata__" object of the file (empty when absent). Validates the header as load_safetensors does but
// reads no tensor data.
std::map<std::string, std::string> safetensors_metadata(const std::string& path);

// Write tensors (any device, dtype, strides: copied to contiguous CPU first) in sorted name order. The header is
// padded with spaces so that the data starts at a multiple of 8 bytes. Written to a unique temporary file in the
// target's directory, fsync'ed, renamed over `path`, and the directory fsync'ed: a crash leaves either the old file
// or the new one. On failure the temporary file is removed and mt::Error(Io) names the path and strerror.
// Names must be non-empty and not "__metadata__"; tensors must be defined (mt::Error(Shape) otherwise).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mt
