#include "train/outputs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "train/ckpt/checkpoint_io.h"

namespace mt::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string parent_dir(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// A CSV field, quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

void check_output_path(const std::string& path, bool force, const std::string& option) {
  std::error_code ec;
  MT_CHECK(!path.empty(), ErrorKind::Usage, option, ": empty path");
  MT_CHECK(!std::filesystem::is_directory(path, ec), ErrorKind::Usage, option, " ", path,
           ": is a directory, expected a file name");
  MT_CHECK(force || !std::filesystem::exists(path, ec), ErrorKind::Usage, option, " ", path,
           ": the file exists (--force replaces it)");
  const std::string dir = parent_dir(path);
  MT_CHECK(std::filesystem::is_directory(dir, ec), ErrorKind::Usage, option, " ", path, ": no such directory '", dir,
           "'");
}

AtomicTextFile::AtomicTextFile(const std::string& path) : path_(path) {
  std::string tmpl = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  MT_CHECK(fd >= 0, ErrorKind::Io, "cannot create a temporary file next to '", path, "': ", std::strerror(errno));
  set_created_file_mode(fd);
  tmp_ = tmpl;
  f_ = ::fdopen(fd, "wb");
  if (f_ == nullptr) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp_.c_str());
    throw Error(ErrorKind::Io, str("cannot write '", tmp_, "': ", std::strerror(err)));
  }
}

AtomicTextFile::~AtomicTextFile() {
  if (f_ != nullptr) std::fclose(f_);
  if (!finished_) ::unlink(tmp_.c_str());
}

void AtomicTextFile::write(const std::string& text) {
  MT_CHECK(std::fwrite(text.data(), 1, text.size(), f_) == text.size(), ErrorKind::Io, "write to '", tmp_, "' (for ",
           path_, ") failed: ", std::strerror(errno));
}

void AtomicTextFile::finish() {
  MT_CHECK(std::fflush(f_) == 0, ErrorKind::Io, "write to '", tmp_, "' (for ", path_,
           ") failed: ", std::strerror(errno));
  MT_CHECK(::fsync(::fileno(f_)) == 0, ErrorKind::Io, "fsync of '", tmp_, "' failed: ", std::strerror(errno));
  const int rc = std::fclose(f_);
  f_ = nullptr;
  MT_CHECK(rc == 0, ErrorKind::Io, "closing '", tmp_, "' failed: ", std::strerror(errno));
  MT_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, ErrorKind::Io, "cannot rename '", tmp_, "' to '", path_,
           "': ", std::strerror(errno));
  finished_ = true;
  fsync_directory(parent_dir(path_));
}

std::string shortest_double(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

const std::string& prediction_path(const std::string& path) {
  MT_CHECK(ends_with(path, ".jsonl") || ends_with(path, ".csv"), ErrorKind::Usage, "--out ", path,
           ": the file name must end in .jsonl or .csv");
  return path;
}

PredictionWriter::PredictionWriter(const std::string& path, std::vector<std::string> labels)
    : file_(prediction_path(path)), labels_(std::move(labels)), csv_(ends_with(path, ".csv")) {
  if (csv_) {
    std::string h = "row,predicted";
    for (const std::string& l : labels_) h += "," + csv_field("prob_" + l);
    file_.write(h + "\n");
  }
}

void PredictionWriter::write(int64_t row, const double* probs) {
  int64_t best = 0;
  for (size_t k = 1; k < labels_.size(); ++k)
    if (probs[k] > probs[best]) best = static_cast<int64_t>(k);
  if (csv_) {
    std::string line = std::to_string(row) + "," + csv_field(labels_[static_cast<size_t>(best)]);
    for (size_t k = 0; k < labels_.size(); ++k) line += "," + shortest_double(probs[k]);
    file_.write(line + "\n");
    return;
  }
  nlohmann::ordered_json j;
  j["row"] = row;
  j["predicted"] = labels_[static_cast<size_t>(best)];
  nlohmann::ordered_json p = nlohmann::ordered_json::object();
  for (size_t k = 0; k < labels_.size(); ++k) p[labels_[k]] = probs[k];
  j["probs"] = p;
  file_.write(j.dump() + "\n");
}

}  // namespace mt::train
