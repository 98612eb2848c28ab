#include "train/logger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace mt::train {

namespace {

std::string sys_error() { return std::strerror(errno); }

// Cuts a partial last line (no trailing '\n') off the file at `path`, if it exists: after a crash in mid-write
// the file ends with a fragment of JSON that would otherwise be glued to the next record.
void truncate_partial_line(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    MT_CHECK(errno == ENOENT, ErrorKind::Io, "metrics file '", path, "': cannot open for repair: ", sys_error());
    return;  // nothing to repair: append creates it
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  MT_CHECK(::fstat(fd, &st) == 0, ErrorKind::Io, "metrics file '", path, "': cannot stat: ", sys_error());
  off_t end = st.st_size;
  if (end == 0) return;
  // Scan backwards for the last newline, in chunks.
  char buf[65536];
  off_t pos = end;
  off_t keep = 0;  // new size: just past the last '\n' (0 if there is none)
  bool first_chunk = true;
  while (pos > 0) {
    const off_t n = std::min<off_t>(pos, static_cast<off_t>(sizeof buf));
    pos -= n;
    const ssize_t got = ::pread(fd, buf, static_cast<size_t>(n), pos);
    MT_CHECK(got == static_cast<ssize_t>(n), ErrorKind::Io, "metrics file '", path,
             "': cannot read: ", got < 0 ? sys_error() : std::string("short read"));
    if (first_chunk && buf[n - 1] == '\n') return;  // complete last line: nothing to do
    first_chunk = false;
    const char* nl = nullptr;
    for (off_t i = n; i > 0; --i) {
      if (buf[i - 1] == '\n') {
        nl = buf + i - 1;
        break;
      }
    }
    if (nl) {
      keep = pos + (nl - buf) + 1;
      break;
    }
  }
  MT_CHECK(::ftruncate(fd, keep) == 0, ErrorKind::Io, "metrics file '", path,
           "': cannot cut the partial last line: ", sys_error());
}

void collect_nonfinite(nlohmann::json& j, const std::string& prefix, std::vector<std::string>& out) {
  if (j.is_number_float()) {
    if (!std::isfinite(j.get<double>())) {
      j = nullptr;
      out.push_back(prefix);
    }
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      collect_nonfinite(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i)
      collect_nonfinite(j[i], prefix.empty() ? std::to_string(i) : prefix + "." + std::to_string(i), out);
  }
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

std::vector<std::string> null_nonfinite(nlohmann::json& record) {
  std::vector<std::string> keys;
  collect_nonfinite(record, "", keys);
  return keys;
}

// ------------------------------------------------------------------------------------------------ MetricsLog
MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  MT_CHECK(!path.empty(), ErrorKind::Io, "metrics file: empty path");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    MT_CHECK(!ec, ErrorKind::Io, "metrics file '", path, "': cannot create directory '", parent.string(),
             "': ", ec.message());
  }
  if (append) truncate_partial_line(path);
  f_ = std::fopen(path.c_str(), append ? "ae" : "we");
  MT_CHECK(f_ != nullptr, ErrorKind::Io, "metrics file '", path, "': cannot open for ",
           append ? "appending" : "writing", ": ", sys_error());
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const nlohmann::json& record) {
  MT_CHECK(record.is_object(), ErrorKind::Internal, "MetricsLog::write: a record must be a JSON object, got ",
           record.type_name());
  nlohmann::json rec = record;
  std::vector<std::string> bad = null_nonfinite(rec);
  if (!bad.empty()) rec["nonfinite"] = bad;
  // Invalid UTF-8 in strings (a file name, say) is replaced rather than thrown on.
  std::string line = rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  errno = 0;
  const bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0;
  MT_CHECK(ok, ErrorKind::Io, "metrics file '", path_,
           "': write failed: ", errno ? sys_error() : std::string("unknown error"));
}

// ------------------------------------------------------------------------------------------------ formatting
std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-:--:--";
  const long long s = std::llround(seconds);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

std::string format_rate(double v) {
  if (!std::isfinite(v)) return fmt("%g", v);
  static const char* suffix[] = {"", "k", "M", "G"};
  int k = 0;
  double a = v;
  while (std::fabs(a) >= 999.5 && k < 3) {
    a /= 1000.0;
    ++k;
  }
  return k == 0 ? fmt("%.0f", a) : fmt("%.3g", a) + suffix[k];
}

std::string format_lr(double lr) { return fmt("%.2e", lr); }

// ------------------------------------------------------------------------------------------------ Progress
Progress::Progress(int64_t total_steps, bool enabled, int64_t start_step)
    : total_(total_steps), start_step_(start_step), t0_(std::chrono::steady_clock::now()) {
  tty_ = enabled && ::isatty(::fileno(stdout)) == 1;
}

Progress::~Progress() { finish(); }

void Progress::emit(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void Progress::update(int64_t step, double loss, double lr, double grad_norm, double loss_scale, double tokens_per_s,
                      int64_t skipped) {
  const auto now = std::chrono::steady_clock::now();
  double per_step = NAN;
  if (step_ref_ < 0) {
    // First update: the interval includes the warm-up step; use it only until there is a better reference.
    if (step > start_step_) per_step = std::chrono::duration<double>(now - t0_).count() / double(step - start_step_);
    step_ref_ = step;
    t_ref_ = now;
  } else if (step > step_ref_) {
    per_step = std::chrono::duration<double>(now - t_ref_).count() / double(step - step_ref_);
  }
  const double eta = per_step * double(std::max<int64_t>(0, total_ - step));

  std::string fields = "loss " + fmt("%.4f", loss) + "  lr " + format_lr(lr) + "  gnorm " + fmt("%.4g", grad_norm);
  std::string tail;
  if (epoch_ >= 0) tail += "  epoch " + fmt("%.2f", epoch_);
  if (loss_scale != 1.0) tail += "  scale " + fmt("%g", loss_scale);
  if (skipped > 0) tail += "  skipped " + std::to_string(skipped);
  const std::string steps = std::to_string(step) + "/" + std::to_string(total_);
  if (tty_) {
    constexpr int kWidth = 24;
    const double frac = total_ > 0 ? std::clamp(double(step) / double(total_), 0.0, 1.0) : 0.0;
    const int filled = static_cast<int>(frac * kWidth);
    std::string line = "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] " + steps + " " +
                       fmt("%3.0f%%", frac * 100.0) + "  " + fields + "  " + format_rate(tokens_per_s) +
                       " tok/s  eta " + format_duration(eta) + tail;
    emit("\r" + line + "\033[K");
    last_bar_ = line;
    bar_shown_ = true;
  } else {
    emit("step " + steps + "  " + fields + "  tok/s " + format_rate(tokens_per_s) + "  eta " + format_duration(eta) +
         tail + "\n");
  }
}

void Progress::message(const std::string& line) {
  if (tty_ && bar_shown_) {
    emit("\r\033[K" + line + "\n" + last_bar_ + "\033[K");
  } else {
    emit(line + "\n");
  }
}

void Progress::finish() {
  if (tty_ && bar_shown_) emit("\n");
  bar_shown_ = false;
}

}  // namespace mt::train
