// Reading a file as a stream of chunks, gzip-compressed or not (zlib's gzread passes plain files through): the one
// place that drives zlib for text and FASTA inputs (TextDataset's FASTA reader, `mamba-train prepare`).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace mt::data {

// Calls sink(chunk, n) for consecutive chunks (up to 64 KiB) of the decompressed content of `path`. Errors are
// mt::Error(Data) "<what>: cannot open '<path>': <strerror>" / "<what>: '<path>': cannot read (<zlib message>)";
// exceptions thrown by sink propagate (the file is closed either way).
void read_chunks(const std::string& path, const std::string& what,
                 const std::function<void(const char* chunk, size_t n)>& sink);

// The whole file as bytes (no decompression). mt::Error(Data) "<path>: cannot open: <strerror>" / "<path>: read error".
std::string read_file_text(const std::string& path);

}  // namespace mt::data
