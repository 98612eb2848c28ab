// Reading a data file, gzip-compressed or not: the one place that decides and drives zlib for every data reader
// (text LM data with any tokenizer, FASTA, TSV / CSV / JSONL / FASTA class files, tokenizer.json, `prepare`).
//
// One rule: a file is gzip when its first two bytes are gzip's magic (1f 8b), whatever its name; anything else is
// read as it is. A gzip file is decompressed member by member (concatenated members, as bgzip writes, are one
// stream) and must end exactly where its last member ends: a stream cut short (a partial download or copy, a missing
// 8-byte CRC / length trailer), corrupt deflate data, a CRC or length mismatch and trailing bytes that are not
// another member are refused with mt::Error(Data) naming the file, never read as far as they go.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mt::data {

// True when the file starts with gzip's magic bytes. False for unreadable or shorter files.
bool is_gzip_file(const std::string& path);

// Calls sink(chunk, n) for consecutive chunks (up to 64 KiB) of the content of `path`, decompressed when it is gzip.
// Errors are mt::Error(Data), prefixed "<what>: " when `what` is not empty: "cannot open '<path>': <strerror>",
// "'<path>': cannot read: <strerror>", "'<path>': <what is wrong with the gzip data> (at compressed byte N of M)".
// Exceptions thrown by sink propagate (the file is closed either way).
void read_chunks(const std::string& path, const std::string& what,
                 const std::function<void(const char* chunk, size_t n)>& sink);

// The whole content of `path`, decompressed when it is gzip (errors as read_chunks).
std::string read_content(const std::string& path, const std::string& what = "");

// The first up to n bytes of the content (decompressed when gzip); "" when the file cannot be read. No errors: for
// recognising what a file holds (a compressed token shard, say) before reading it properly.
std::string peek_content(const std::string& path, size_t n);

}  // namespace mt::data
