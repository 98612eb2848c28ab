// Checkpoint files, manifests, the `latest` pointer and retention (layout and guarantees in train/ckpt/checkpoint.h).
//
// Save order (each arrow is a durable point: fsync of the file, rename, fsync of the directory):
//   image in memory -> ckpt-N.h5 -> ckpt-N.h5.sha256 -> latest -> delete old ckpt-M.h5, then ckpt-M.h5.sha256.
// A kill anywhere leaves at most one ckpt-*.h5 that does not verify: ckpt-N.h5 between its rename and its manifest's
// rename (its manifest is missing, or is that of an earlier save of the same step). Old checkpoints are deleted data
// first, so a kill there leaves an orphan manifest, never a checkpoint without one. The next save removes the debris
// (manifest-less checkpoint files and orphan manifests) after it has published its own checkpoint.
#include "train/ckpt/checkpoint.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <utility>

#include "train/ckpt/checkpoint_h5.h"
#include "train/ckpt/checkpoint_io.h"

namespace mt::train {

namespace {

constexpr const char* kManifestSuffix = ".sha256";

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string base_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// Checkpoints in dir as (step, file name), newest first. Missing / unreadable dir: empty.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    int64_t step = checkpoint_step_from_name(e->d_name);
    if (step >= 0) out.emplace_back(step, e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

// "<64 hex>  <name>\n" (also "<64 hex> *<name>", sha256sum's binary-mode marker). Returns the lower-case hash and
// sets *name, or throws the reason.
std::string parse_manifest(const std::vector<unsigned char>& bytes, std::string* name) {
  std::string text(bytes.begin(), bytes.end());
  if (!text.empty() && text.back() == '\n') text.pop_back();
  bool ok = text.size() > 66 && text.size() < 4096 && text.find('\n') == std::string::npos &&
            text.find('\0') == std::string::npos && text[64] == ' ' && (text[65] == ' ' || text[65] == '*');
  for (size_t i = 0; ok && i < 64; ++i) ok = std::isxdigit(static_cast<unsigned char>(text[i])) != 0;
  if (!ok) throw Error(ErrorKind::Checkpoint, "manifest malformed (expected one line '<64 hex digits>  <file name>')");
  std::string hash = text.substr(0, 64);
  for (char& c : hash) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  *name = text.substr(66);
  return hash;
}

// Manifest, hash, then HDF5. Throws mt::Error(Checkpoint, reason) without the path (callers add it).
CheckpointData check(const std::string& path, bool read_data, bool read_tensors = true) {
  const std::string name = base_name(path);
  std::vector<unsigned char> bytes;
  const std::string manifest_path = path + kManifestSuffix;
  int err = read_whole_file(manifest_path, &bytes);
  if (err == ENOENT) throw Error(ErrorKind::Checkpoint, "manifest missing ('" + manifest_path + "')");
  if (err) throw Error(ErrorKind::Checkpoint, str("cannot read manifest '", manifest_path, "': ", std::strerror(err)));
  std::string listed;
  const std::string want = parse_manifest(bytes, &listed);
  if (listed != name)
    throw Error(ErrorKind::Checkpoint, "manifest names another file ('" + listed + "', not '" + name + "')");

  err = read_whole_file(path, &bytes);
  if (err == ENOENT) throw Error(ErrorKind::Checkpoint, "file missing");
  if (err) throw Error(ErrorKind::Checkpoint, str("cannot read the file: ", std::strerror(err)));
  const std::string got = sha256_hex(bytes.data(), bytes.size());
  if (got != want)
    throw Error(ErrorKind::Checkpoint, str("SHA-256 mismatch: file changed or truncated (", bytes.size(),
                                           " bytes hash to ", got, ", the manifest says ", want, ")"));
  // Only verified bytes reach HDF5.
  return parse_checkpoint_image(bytes, checkpoint_step_from_name(name), read_data, read_tensors);
}

void unlink_or_throw(const std::string& path, const std::string& saved) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw Error(ErrorKind::Io, str(path, ": cannot delete an old checkpoint file: ", std::strerror(errno),
                                   " (the new checkpoint '", saved, "' was saved)"));
}

bool missing(const std::string& path) { return ::access(path.c_str(), F_OK) != 0 && errno == ENOENT; }

// First removes the debris of interrupted saves: checkpoint files without a manifest (a writer died between the two
// renames; such a file never was a published checkpoint) and manifests without a checkpoint file (a kill between the
// two unlinks below). Then keeps the keep_last newest checkpoints (and always `saved` and the steps in `keep`) and
// deletes the rest, data file first, then its manifest. Assumes one writer per directory.
void apply_retention(const std::string& dir, const std::string& saved_name, int64_t keep_last,
                     const std::vector<int64_t>& keep) {
  const std::string saved = join(dir, saved_name);
  bool deleted = false;
  for (const auto& c : list_checkpoints(dir)) {
    const std::string p = join(dir, c.second);
    if (c.second != saved_name && missing(p + kManifestSuffix)) {
      unlink_or_throw(p, saved);
      deleted = true;
    }
  }
  auto ckpts = list_checkpoints(dir);
  if (keep_last > 0) {
    for (size_t i = static_cast<size_t>(keep_last); i < ckpts.size(); ++i) {
      if (ckpts[i].second == saved_name || std::find(keep.begin(), keep.end(), ckpts[i].first) != keep.end()) continue;
      const std::string p = join(dir, ckpts[i].second);
      unlink_or_throw(p, saved);
      checkpoint_fault_point("retention:deleted");
      unlink_or_throw(p + kManifestSuffix, saved);
      deleted = true;
    }
  }
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> orphans;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      size_t sl = std::strlen(kManifestSuffix);
      if (n.size() <= sl || n.compare(n.size() - sl, sl, kManifestSuffix) != 0) continue;
      std::string data_name = n.substr(0, n.size() - sl);
      if (checkpoint_step_from_name(data_name) >= 0 && data_name != saved_name && missing(join(dir, data_name)))
        orphans.push_back(n);
    }
    ::closedir(d);
    for (const auto& n : orphans) unlink_or_throw(join(dir, n), saved);
    deleted = deleted || !orphans.empty();
  }
  if (deleted) fsync_directory(dir);
}

}  // namespace

std::string checkpoint_file_name(int64_t step) {
  MT_CHECK(step >= 0, ErrorKind::Checkpoint, "checkpoint step must be >= 0, got ", step);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "ckpt-%08lld.h5", static_cast<long long>(step));
  return buf;
}

int64_t checkpoint_step_from_name(const std::string& name) {
  // "ckpt-" + at least 8 digits + ".h5", canonical (what checkpoint_file_name makes), step < 10^18.
  if (name.size() < 5 + 8 + 3 || name.size() > 5 + 18 + 3 || name.compare(0, 5, "ckpt-") != 0 ||
      name.compare(name.size() - 3, 3, ".h5") != 0)
    return -1;
  const std::string digits = name.substr(5, name.size() - 8);
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    step = step * 10 + (c - '0');
  }
  return checkpoint_file_name(step) == name ? step : -1;
}

std::string checkpoint_manifest(const std::string& file_name, const void* bytes, size_t n) {
  return sha256_hex(bytes, n) + "  " + file_name + "\n";
}

std::string save_checkpoint(const std::string& dir, int64_t step, const CheckpointData& data, int64_t keep_last,
                            const std::string& also_keep) {
  std::vector<int64_t> keep;
  if (!also_keep.empty() && checkpoint_step_from_name(also_keep) >= 0)
    keep.push_back(checkpoint_step_from_name(also_keep));
  return save_checkpoint(dir, step, data, keep_last, keep);
}

std::string save_checkpoint(const std::string& dir, int64_t step, const CheckpointData& data, int64_t keep_last,
                            const std::vector<int64_t>& keep) {
  const std::string name = checkpoint_file_name(step);
  MT_CHECK(!dir.empty(), ErrorKind::Checkpoint, "checkpoint directory name is empty");
  const std::string path = join(dir, name);
  std::vector<unsigned char> image = build_checkpoint_image(step, data);
  const std::string manifest = checkpoint_manifest(name, image.data(), image.size());
  ensure_directory(dir);
  remove_stale_temp_files(dir);  // frees the space of killed writers before we need it
  bool data_in_place = false;
  try {
    write_file_atomic(path, image.data(), image.size(), "data", &data_in_place);
    std::vector<unsigned char>().swap(image);
    write_file_atomic(path + kManifestSuffix, manifest.data(), manifest.size(), "manifest");
  } catch (...) {
    // Never leave a checkpoint file without its manifest behind a reported failure (but never remove the previous
    // file of the same step when ours did not replace it).
    if (data_in_place) ::unlink(path.c_str());
    throw;
  }
  const std::string latest = name + "\n";
  write_file_atomic(join(dir, "latest"), latest.data(), latest.size(), "latest");
  apply_retention(dir, name, keep_last, keep);
  remove_temp_files_of_earlier_processes(dir);  // what a save killed before this process started left behind
  return path;
}

void write_best_pointer(const std::string& dir, int64_t step) {
  const std::string text = checkpoint_file_name(step) + "\n";
  write_file_atomic(join(dir, "best"), text.data(), text.size(), "best");
}

void remove_best_pointer(const std::string& dir) {
  const std::string p = join(dir, "best");
  if (::unlink(p.c_str()) != 0 && errno != ENOENT)
    throw Error(ErrorKind::Io, str(p, ": cannot remove the stale best pointer: ", std::strerror(errno)));
}

std::string best_checkpoint(const std::string& dir_in) {
  const std::string dir = checkpoint_dir_of(dir_in);
  std::vector<unsigned char> bytes;
  const int err = read_whole_file(join(dir, "best"), &bytes);
  MT_CHECK(err != ENOENT, ErrorKind::Checkpoint, "no best checkpoint in '", dir,
           "': the run had no checkpoint.monitor (or no evaluation yet)");
  MT_CHECK(err == 0, ErrorKind::Checkpoint, "cannot read '", join(dir, "best"), "': ", std::strerror(err));
  std::string name(bytes.begin(), bytes.end());
  if (!name.empty() && name.back() == '\n') name.pop_back();
  MT_CHECK(checkpoint_step_from_name(name) >= 0, ErrorKind::Checkpoint, "'", join(dir, "best"),
           "' does not name a checkpoint (expected one line ckpt-<step>.h5)");
  const std::string path = join(dir, name);
  const std::string why = verify_checkpoint(path);
  MT_CHECK(why.empty(), ErrorKind::Checkpoint, "the best checkpoint '", path, "' (named by '", join(dir, "best"),
           "') is invalid: ", why);
  return path;
}

CheckpointData load_checkpoint(const std::string& path) {
  try {
    return check(path, /*read_data=*/true);
  } catch (const Error& e) {
    throw Error(ErrorKind::Checkpoint, str("checkpoint '", path, "': ", e.what()));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorKind::Checkpoint, str("checkpoint '", path, "': out of memory while loading it"));
  }
}

CheckpointData load_checkpoint_metadata(const std::string& path) {
  try {
    return check(path, /*read_data=*/true, /*read_tensors=*/false);
  } catch (const Error& e) {
    throw Error(ErrorKind::Checkpoint, str("checkpoint '", path, "': ", e.what()));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorKind::Checkpoint, str("checkpoint '", path, "': out of memory while loading it"));
  }
}

std::string verify_checkpoint(const std::string& path) {
  try {
    check(path, /*read_data=*/false);
    return "";
  } catch (const std::bad_alloc&) {
    return "out of memory while verifying it";
  } catch (const std::exception& e) {
    std::string reason = e.what();
    return reason.empty() ? "unknown error" : reason;
  } catch (...) {
    return "unknown error";
  }
}

std::string latest_checkpoint(const std::string& dir, std::vector<std::string>* skipped) {
  for (const auto& c : list_checkpoints(dir)) {
    const std::string p = join(dir, c.second);
    std::string reason = verify_checkpoint(p);
    if (reason.empty()) return p;
    if (skipped) skipped->push_back(p + ": " + reason);
  }
  return "";
}

std::string checkpoint_dir_of(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path + "/checkpoints", ec)) return path + "/checkpoints";
  return path;
}

}  // namespace mt::train
