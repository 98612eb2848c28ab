#include "core/paths.h"

#include <unistd.h>

#include <climits>
#include <filesystem>

namespace mt {

namespace {

bool present(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec) || std::filesystem::exists(p.string() + ".000.bin", ec);
}

}  // namespace

std::string shipped_data_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  const std::filesystem::path dir = std::filesystem::path(buf).parent_path().parent_path() / "share" / "mamba-train";
  std::error_code ec;
  return std::filesystem::is_directory(dir, ec) ? dir.string() : "";
}

std::string shipped_path(const std::string& path) {
  if (path.empty()) return path;
  const std::filesystem::path p(path);
  if (p.is_absolute() || present(p)) return path;
  const std::string share = shipped_data_dir();
  if (share.empty()) return path;
  const std::filesystem::path q = std::filesystem::path(share) / p;
  return present(q) ? q.string() : path;
}

}  // namespace mt
