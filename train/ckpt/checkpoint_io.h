// POSIX and hashing helpers behind train/ckpt/checkpoint.h: whole-file SHA-256 (OpenSSL EVP), checked whole-file reads,
// and atomic, durable file publication (docs/DESIGN.md F1-F3):
//   unique temp file in the target directory (O_CREAT|O_EXCL, name ".ckpt-<8 hex>.tmp", flock'ed while we own it)
//   -> write loop that retries EINTR and short writes -> fsync -> close -> rename over the final name
//   -> fsync the directory.
// Any failure unlinks the temp file and throws mt::Error(ErrorKind::Io, "<final path>: <what>: <strerror>"), so the
// file previously published under that name is untouched.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mt::train {

// Lower-case hex SHA-256 of a buffer.
std::string sha256_hex(const void* data, size_t n);

// Reads a whole regular file. Returns 0 and fills *out, or the errno that stopped it (ENOENT for a missing file,
// EISDIR for a directory, ENOMEM when the buffer cannot be allocated). Never throws.
int read_whole_file(const std::string& path, std::vector<unsigned char>* out);

// Publishes `n` bytes under `path` atomically and durably (see above). Throws mt::Error(Io). `stage` names the
// fault points "<stage>:written", "<stage>:synced", "<stage>:renamed" (nullptr: none). *renamed (when given) is set
// once the new file is in place, so that a caller seeing an exception knows whether `path` is still the old file.
void write_file_atomic(const std::string& path, const void* data, size_t n, const char* stage = nullptr,
                       bool* renamed = nullptr);

// fsync a directory (makes renames / unlinks in it durable). Throws mt::Error(Io).
void fsync_directory(const std::string& dir);

// Creates `dir` (and parents) when missing, fsyncing each new directory's parent. Throws mt::Error(Io).
void ensure_directory(const std::string& dir);

// Removes temp files ".ckpt-*.tmp" in `dir` left by writers that died: only files nobody holds a lock on and that
// were not modified in the last `min_age_s` seconds. Returns how many were removed. Never throws.
int remove_stale_temp_files(const std::string& dir, int min_age_s = 10);

// Removes the temp files ".ckpt-*.tmp" in `dir` that earlier processes left (killed while writing): those nobody holds
// a lock on, last modified before this process started. Called after a successful write into `dir`, so that the
// debris of a kill does not outlive the next save. Never throws. Assumes one writer process per directory.
int remove_temp_files_of_earlier_processes(const std::string& dir);

// True for temp-file names this module creates (".ckpt-<8 hex>.tmp").
bool is_checkpoint_temp_name(const std::string& name);

// Test-only fault injection: when set, called with a stage name at each step of a checkpoint save
// ("data:begin" before the temp file exists, "data:partial" half-way through the payload, "data:written",
// "data:synced", "data:renamed", the same five for "manifest:" and
// "latest:", then "retention:deleted" after each old checkpoint file is unlinked); a test hook may raise(SIGKILL)
// there. nullptr (the default) disables it.
using CheckpointFaultHook = void (*)(const char* stage);
void set_checkpoint_fault_hook(CheckpointFaultHook hook);
void checkpoint_fault_point(const char* stage);  // calls the hook, if any

}  // namespace mt::train
