#include "train/ckpt/checkpoint_io.h"
#include "core/fault_hook.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <new>
#include <random>

#include "core/error.h"

namespace mt::train {

namespace {

std::atomic<CheckpointFaultHook> g_fault_hook{nullptr};

std::string errno_str(int err) { return str(std::strerror(err), " (errno ", err, ")"); }

std::string dir_of(const std::string& path) {
  std::filesystem::path p(path);
  std::string d = p.parent_path().string();
  return d.empty() ? "." : d;
}

// Writes all bytes; retries EINTR and short writes. Returns 0 or errno.
int write_all(int fd, const unsigned char* p, size_t n) {
  while (n > 0) {
    size_t chunk = n < (size_t(1) << 30) ? n : (size_t(1) << 30);
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;  // a regular file never accepts 0 bytes without an error; do not spin
    p += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

int fsync_retry(int fd) {
  for (;;) {
    if (::fsync(fd) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// Creates ".ckpt-<8 hex>.tmp" in dir with O_EXCL; returns the fd and sets *tmp_path, or throws Io.
int create_temp(const std::string& dir, const std::string& final_path, std::string* tmp_path) {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  std::mt19937_64 gen((uint64_t(rd()) << 32) ^ rd() ^ (uint64_t(::getpid()) << 16) ^ counter.fetch_add(1));
  for (int attempt = 0; attempt < 100; ++attempt) {
    char name[32];
    std::snprintf(name, sizeof(name), ".ckpt-%08x.tmp", static_cast<unsigned>(gen() & 0xffffffffu));
    std::string p = dir + "/" + name;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      // The lock tells remove_stale_temp_files that a live writer owns this file (released when we close / die).
      ::flock(fd, LOCK_EX);
      *tmp_path = p;
      return fd;
    }
    if (errno == EEXIST || errno == EINTR) continue;
    throw Error(ErrorKind::Io, str(final_path, ": cannot create a temporary file in '", dir, "': ", errno_str(errno)));
  }
  throw Error(ErrorKind::Io, str(final_path, ": cannot find a free temporary file name in '", dir, "'"));
}

}  // namespace

void set_checkpoint_fault_hook(CheckpointFaultHook hook) { g_fault_hook.store(hook); }

void checkpoint_fault_point(const char* stage) {
  CheckpointFaultHook hook = g_fault_hook.load();
  if (hook) hook(stage);
  fault_point((std::string("checkpoint:") + stage).c_str());
}

std::string sha256_hex(const void* data, size_t n) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  MT_CHECK(ctx != nullptr, ErrorKind::OutOfMemory, "OpenSSL: cannot allocate a digest context");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  bool ok = EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  while (ok && n > 0) {  // feed in 1 GiB pieces (EVP takes size_t, but keep each call modest)
    size_t chunk = n < (size_t(1) << 30) ? n : (size_t(1) << 30);
    ok = EVP_DigestUpdate(ctx.get(), p, chunk) == 1;
    p += chunk;
    n -= chunk;
  }
  ok = ok && EVP_DigestFinal_ex(ctx.get(), md, &len) == 1;
  MT_CHECK(ok && len == 32, ErrorKind::Internal, "OpenSSL SHA-256 failed");
  static const char* hex = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned i = 0; i < 32; ++i) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  return out;
}

int read_whole_file(const std::string& path, std::vector<unsigned char>* out) {
  out->clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
  }
  try {
    out->resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    for (;;) {
      if (got == out->size()) out->resize(out->size() + 65536);  // the file may have grown: read to EOF
      ssize_t r = ::read(fd, out->data() + got, out->size() - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        out->clear();
        return err;
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    out->resize(got);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    out->clear();
    out->shrink_to_fit();
    return ENOMEM;
  }
  ::close(fd);
  return 0;
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MT_CHECK(fd >= 0, ErrorKind::Io, dir, ": cannot open the directory to fsync it: ", errno_str(errno));
  int err = fsync_retry(fd);
  ::close(fd);
  // Some filesystems refuse fsync on directories (EINVAL); the rename is still atomic there.
  MT_CHECK(err == 0 || err == EINVAL, ErrorKind::Io, dir, ": fsync of the directory failed: ", errno_str(err));
}

void ensure_directory(const std::string& dir) {
  std::filesystem::path p(dir);
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) return;
  // Create one level at a time so that each new directory's parent can be fsynced.
  std::vector<std::filesystem::path> missing;
  for (std::filesystem::path q = p; !q.empty() && !std::filesystem::exists(q, ec); q = q.parent_path()) {
    missing.push_back(q);
    if (q == q.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST)
      throw Error(ErrorKind::Io, str(it->string(), ": cannot create the checkpoint directory: ", errno_str(errno)));
    std::string parent = it->parent_path().string();
    fsync_directory(parent.empty() ? "." : parent);
  }
  MT_CHECK(std::filesystem::is_directory(p, ec), ErrorKind::Io, dir, ": exists but is not a directory");
}

void write_file_atomic(const std::string& path, const void* data, size_t n, const char* stage, bool* renamed) {
  const std::string dir = dir_of(path);
  std::string tmp;
  if (stage) checkpoint_fault_point(str(stage, ":begin").c_str());
  int fd = create_temp(dir, path, &tmp);
  // Until the rename, any exit (an I/O error below, or an exception from a fault hook) closes and removes the temp.
  try {
    auto fail = [&](const char* what, int err) {
      throw Error(ErrorKind::Io,
                  str(path, ": ", what, ": ", errno_str(err), " (temporary file '", tmp, "' removed; ",
                      "any previous '", std::filesystem::path(path).filename().string(), "' is untouched)"));
    };
    // Checkpoint files are written in two halves with a fault stage between them (a kill mid-payload); the harness
    // can also fail the payload write (ENOSPC / EIO after half of it) and the fsync.
    const unsigned char* bytes = static_cast<const unsigned char*>(data);
    int err = 0;
    if (stage && fault_point("write", static_cast<int64_t>(n), &err)) {
      (void)write_all(fd, bytes, n / 2);
      if (err == 0) err = EIO;
    } else if (stage) {
      err = write_all(fd, bytes, n / 2);
      if (!err) checkpoint_fault_point(str(stage, ":partial").c_str());
      if (!err) err = write_all(fd, bytes + n / 2, n - n / 2);
    } else {
      err = write_all(fd, bytes, n);
    }
    if (err) fail("write failed", err);
    if (stage) checkpoint_fault_point(str(stage, ":written").c_str());
    if (stage && fault_point("fsync", 0, &err)) {
      if (err == 0) err = EIO;
    } else {
      err = fsync_retry(fd);
    }
    if (err) fail("fsync failed", err);
    if (stage) checkpoint_fault_point(str(stage, ":synced").c_str());
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0 && errno != EINTR) fail("close failed", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename of the temporary file failed", errno);
    if (renamed) *renamed = true;
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (stage) checkpoint_fault_point(str(stage, ":renamed").c_str());
  fsync_directory(dir);
}

bool is_checkpoint_temp_name(const std::string& name) {
  if (name.size() != 18 || name.compare(0, 6, ".ckpt-") != 0 || name.compare(14, 4, ".tmp") != 0) return false;
  for (size_t i = 6; i < 14; ++i)
    if (!std::isxdigit(static_cast<unsigned char>(name[i]))) return false;
  return true;
}

namespace {

// When this process started (static initialisation): temp files older than that were left by earlier processes. The
// coarse clock is the one file timestamps come from, so a file this process writes is never dated before it.
const timespec g_process_start = [] {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &t);
  return t;
}();

// Removes the temp files in `dir` that nobody holds a lock on and that were last modified before `cutoff`.
int remove_unlocked_temp_files(const std::string& dir, const timespec& cutoff) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d))
    if (is_checkpoint_temp_name(e->d_name)) names.push_back(e->d_name);
  ::closedir(d);
  int removed = 0;
  for (const auto& name : names) {
    std::string p = dir + "/" + name;
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    struct stat st;
    const bool old = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                     (st.st_mtim.tv_sec < cutoff.tv_sec ||
                      (st.st_mtim.tv_sec == cutoff.tv_sec && st.st_mtim.tv_nsec < cutoff.tv_nsec));
    const bool stale = old && ::flock(fd, LOCK_EX | LOCK_NB) == 0;  // no live writer holds it
    if (stale && ::unlink(p.c_str()) == 0) ++removed;
    ::close(fd);
  }
  return removed;
}

}  // namespace

int remove_stale_temp_files(const std::string& dir, int min_age_s) {
  timespec cutoff{};
  cutoff.tv_sec = ::time(nullptr) - min_age_s + 1;  // modified at least min_age_s whole seconds ago
  return remove_unlocked_temp_files(dir, cutoff);
}

int remove_temp_files_of_earlier_processes(const std::string& dir) {
  return remove_unlocked_temp_files(dir, g_process_start);
}

}  // namespace mt::train
