// HDF5 training checkpoints that are atomic, durable and verified (docs/DESIGN.md F1-F5).
//
// On disk, in a checkpoint directory:
//   ckpt-<step, 8+ digits>.h5          the HDF5 file
//   ckpt-<step>.h5.sha256              manifest, one line "<hex sha256 of the whole file>  ckpt-<step>.h5\n"
//                                      (`sha256sum -c ckpt-<step>.h5.sha256` checks it)
//   latest                             "ckpt-<step>.h5\n": the checkpoint saved last (a hint; loaders re-verify)
//   best                               "ckpt-<step>.h5\n": the best checkpoint by checkpoint.monitor (train/best.h),
//                                      written by the trainer after the save; absent without a monitor
//   .ckpt-<8 hex>.tmp                  files being written (or left by a killed writer); never read
//
// HDF5 layout (format_version 1), readable with h5py / h5dump:
//   /                   attributes format_version (int64) = 1, writer (string) = "mamba-train", step (int64)
//   /tensors/<name>     one dataset per tensor, f32 / f64 / i32 / i64 little-endian, shape = dataspace (0-d tensors
//                       are scalar dataspaces). A '/' in a name is an HDF5 group ("model/backbone.layers.0.mixer.A_log"
//                       is group "model", dataset "backbone.layers.0.mixer.A_log"). bf16 / f16 tensors are stored as
//                       f32 (exact) with a string attribute mt_dtype = "bf16" / "f16" and come back in their dtype.
//   /ints/<name>        scalar int64 dataset
//   /floats/<name>      scalar f64 dataset (bit-exact: NaN payloads, -0.0, inf)
//   /strings/<name>     fixed-length string dataset of exactly the value's bytes (NULLPAD, so embedded NULs survive);
//                       the empty string is a null dataspace
// Objects carry no timestamps, so the same content gives the same bytes (and the same SHA-256).
//
// Saving builds the whole file in memory (HDF5 core driver, no backing store), then publishes it with our own
// checked POSIX writes (temp file, fsync, rename, directory fsync), then the manifest the same way, then `latest`,
// then applies retention. A kill at any instant leaves every previously published checkpoint verifiable; only the one
// being written can be missing its manifest, and temp files are never taken for checkpoints.
// Loading verifies the manifest's SHA-256 of the whole file before HDF5 parses a byte, then opens the verified bytes
// from memory (plugins disabled, only hard links followed), then checks writer, format version and step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt::train {

constexpr int64_t kCheckpointFormatVersion = 1;

struct CheckpointData {
  std::map<std::string, Tensor> tensors;       // CPU (or CUDA: copied) tensors; f32/f64/i64/i32; bf16/f16 as f32
  std::map<std::string, int64_t> ints;         // "step", "samples_seen", "rng/seed", "rng/offset", ...
  std::map<std::string, double> floats;        // "scaler/scale", ...
  std::map<std::string, std::string> strings;  // "config_yaml", "data_fingerprint", ...
};

// Writes <dir>/ckpt-<step as 8 digits>.h5 and its manifest, then <dir>/latest, then deletes the oldest checkpoints
// (and their manifests) beyond keep_last (keep_last <= 0 keeps all; the one just written is always kept, and so is
// the checkpoint file named `also_keep`, e.g. the last one before a non-finite streak). Also removes what interrupted
// saves left: temp files of dead writers (before writing: unlocked ones older than 10 s; after publishing: every
// unlocked one older than this process), checkpoint files without a manifest and manifests without a checkpoint
// file. One writer per directory. Creates dir if needed. Returns the checkpoint's path.
// Names must be non-empty '/'-separated paths without empty, "." or ".." components or NUL bytes, and no name may
// also be the group prefix of another name of the same kind ("a" and "a/b"): mt::Error(Checkpoint) otherwise.
// I/O failures (ENOSPC, EIO, EFBIG, ...): mt::Error(Io, "<path>: <what>: <strerror>"), the temp file removed and the
// previous checkpoints intact.
std::string save_checkpoint(const std::string& dir, int64_t step, const CheckpointData& data, int64_t keep_last,
                            const std::string& also_keep = "");
// The same, and retention never deletes the checkpoints of the steps in `keep` (the best ones, the one before a
// non-finite streak).
std::string save_checkpoint(const std::string& dir, int64_t step, const CheckpointData& data, int64_t keep_last,
                            const std::vector<int64_t>& keep);

// The `best` pointer: written atomically naming ckpt-<step>.h5, or removed (a missing file is fine). mt::Error(Io).
void write_best_pointer(const std::string& dir, int64_t step);
void remove_best_pointer(const std::string& dir);
// The checkpoint the `best` file of a run or checkpoint directory names, verified. mt::Error(Checkpoint) when there is
// no such file ("no best checkpoint in DIR: the run had no checkpoint.monitor"), when it is malformed, or when the
// checkpoint it names does not verify.
std::string best_checkpoint(const std::string& dir);

// Verifies the manifest and the SHA-256 of the whole file, then format version, writer and step, then reads
// everything. Any problem -> mt::Error(Checkpoint, "checkpoint '<path>': <reason>"). Never crashes.
CheckpointData load_checkpoint(const std::string& path);
// The same checks, and everything but the tensors (ints, floats, strings: the configs, the step).
CheckpointData load_checkpoint_metadata(const std::string& path);

// "" if the checkpoint verifies (manifest, hash, HDF5 opens, writer, format version, step, and every object has a
// supported type and a consistent size), else the reason. No exceptions.
std::string verify_checkpoint(const std::string& path);

// Newest checkpoint (by step) in dir that verifies ("" if none). Newer invalid ones are skipped and each skip is
// appended to `skipped` as "<path>: <reason>". Only ckpt-<step>.h5 files are considered; `latest` is not trusted.
std::string latest_checkpoint(const std::string& dir, std::vector<std::string>* skipped = nullptr);

// A checkpoint directory named by the user: RUN_DIR/checkpoints when it exists, else the directory itself.
std::string checkpoint_dir_of(const std::string& path);

// ---- building blocks (tools and tests) ----
// "ckpt-00000042.h5".
std::string checkpoint_file_name(int64_t step);
// Step of a canonical checkpoint file name, or -1 when `name` is not one.
int64_t checkpoint_step_from_name(const std::string& name);
// The complete HDF5 file image save_checkpoint writes (tests craft other format versions with it).
std::vector<unsigned char> build_checkpoint_image(int64_t step, const CheckpointData& data,
                                                  int64_t format_version = kCheckpointFormatVersion);
// The manifest text for a file's bytes: "<hex sha256>  <file name>\n".
std::string checkpoint_manifest(const std::string& file_name, const void* bytes, size_t n);

}  // namespace mt::train
