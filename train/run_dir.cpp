// The run directory: lock, checks before the first step, resume rules and records (train/run_dir.h).
#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/checkpoint_io.h"
#include "train/config/schema.h"
#include "train/dist/launcher.h"

namespace mt::train {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The holder line of a lock file: printable characters of its first line, at most 200.
std::string read_holder(int fd) {
  char buf[256] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s;
  for (ssize_t i = 0; i < n && buf[i] != '\n' && s.size() < 200; ++i)
    if (buf[i] >= 0x20 && buf[i] < 0x7f) s += buf[i];
  return s;
}

// Checkpoint files (ckpt-<step>.h5) in dir, oldest first.
std::vector<std::string> checkpoint_names(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    const int64_t step = checkpoint_step_from_name(n);
    if (step >= 0) found.emplace_back(step, n);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string list_names(const std::vector<std::string>& names, size_t at_most = 5) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < at_most; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > at_most) s += str(", ... (", names.size(), " in all)");
  return s;
}

// True when dir is parent or below it (after resolving both).
bool inside(const std::string& dir, const std::string& parent) {
  std::error_code ec1, ec2;
  const auto d = std::filesystem::weakly_canonical(dir, ec1);
  const auto p = std::filesystem::weakly_canonical(parent, ec2);
  if (ec1 || ec2) return false;
  const auto rel = d.lexically_relative(p);
  return !rel.empty() && *rel.begin() != "..";
}

std::string quote_arg(const std::string& a) {
  if (!a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()[]{}") == std::string::npos) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the flock
}

std::unique_ptr<RunDirLock> lock_run_directory(const std::string& dir, const std::string& key) {
  try {
    ensure_directory(dir);
  } catch (const Error& e) {
    throw Error(ErrorKind::Io, str(key, " '", dir, "': ", e.what()));
  }
  const std::string path = (std::filesystem::path(dir) / "run.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  MT_CHECK(fd >= 0, ErrorKind::Io, key, " '", dir, "': cannot open the lock file '", path, "': ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      std::string holder = read_holder(fd);
      ::close(fd);
      if (holder.empty()) holder = "a process that is starting up";
      throw Error(ErrorKind::RunLocked,
                  str("run directory '", dir, "' (", key, ") is in use by another trainer: ", holder, " (lock '", path,
                      "'); wait for it to finish or stop it, or give this run another run.name / run.out_dir"));
    }
    ::close(fd);
    if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
      std::fprintf(stderr,
                   "warning: %s '%s': the filesystem does not support locks (%s): a second trainer in this "
                   "directory would not be refused\n",
                   key.c_str(), dir.c_str(), std::strerror(err));
      return nullptr;
    }
    throw Error(ErrorKind::Io, str(key, " '", dir, "': cannot lock '", path, "': ", std::strerror(err)));
  }
  std::unique_ptr<RunDirLock> lock(new RunDirLock());
  lock->fd_ = fd;
  lock->path_ = path;
  const std::string holder = str("pid ", ::getpid(), " on host ", host_name(), " since ", utc_now(), "\n");
  // The holder line is only informative: a failure to write it leaves the lock itself intact.
  const bool written = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, holder.data(), holder.size(), 0) > 0;
  (void)written;
  return lock;
}

void check_writable_directory(const std::string& dir, const std::string& key) {
  try {
    ensure_directory(dir);
  } catch (const Error& e) {
    throw Error(ErrorKind::Io, str(key, " '", dir, "' cannot be created (checked before the first step): ", e.what()));
  }
  std::string probe = (std::filesystem::path(dir) / ".write-test-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    if (::write(fd, "x", 1) != 1) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    ::unlink(probe.c_str());
  }
  MT_CHECK(err == 0, ErrorKind::Io, key, " '", dir,
           "' is not writable (checked before the first step): ", std::strerror(err));
}

std::vector<std::unique_ptr<RunDirLock>> prepare_run_directory(const TrainConfig& c) {
  std::vector<std::unique_ptr<RunDirLock>> locks;
  locks.push_back(lock_run_directory(c.run.out_dir, "run.out_dir"));
  check_writable_directory(c.run.out_dir, "run.out_dir");
  if (!inside(c.checkpoint.dir, c.run.out_dir)) locks.push_back(lock_run_directory(c.checkpoint.dir, "checkpoint.dir"));
  check_writable_directory(c.checkpoint.dir, "checkpoint.dir");
  const std::string metrics_dir = std::filesystem::path(c.logging.metrics_file).parent_path().string();
  check_writable_directory(metrics_dir.empty() ? "." : metrics_dir, "logging.metrics_file");
  if (c.checkpoint.resume == "never") {
    const std::vector<std::string> there = checkpoint_names(c.checkpoint.dir);
    MT_CHECK(there.empty(), ErrorKind::Config, "checkpoint.resume: never, but checkpoint.dir '", c.checkpoint.dir,
             "' already holds ", there.size(), " checkpoint(s) (", list_names(there),
             "): a new run would overwrite and mix with them; give it another run.name / run.out_dir, or resume with "
             "checkpoint.resume: auto");
  }
  return locks;
}

std::string checkpoint_to_resume(const TrainConfig& c, std::vector<std::string>* warnings) {
  if (c.checkpoint.resume == "never") return "";
  if (c.checkpoint.resume != "auto") return c.checkpoint.resume;
  std::vector<std::string> skipped;
  const std::string from = latest_checkpoint(c.checkpoint.dir, &skipped);
  for (const std::string& s : skipped) warnings->push_back("skipping invalid checkpoint " + s);
  if (!from.empty()) return from;
  // Nothing verifies. Checkpoint files without a manifest are what an interrupted first save leaves (never
  // published); published ones (with a manifest) that all fail are a damaged run, not a fresh one.
  std::vector<std::string> published;
  std::error_code ec;
  for (const std::string& n : checkpoint_names(c.checkpoint.dir))
    if (std::filesystem::exists(std::filesystem::path(c.checkpoint.dir) / (n + ".sha256"), ec)) published.push_back(n);
  MT_CHECK(published.empty(), ErrorKind::Checkpoint, "checkpoint.resume: auto: none of the ", published.size(),
           " checkpoint(s) in '", c.checkpoint.dir, "' verifies (", skipped.empty() ? std::string() : skipped.front(),
           "); refusing to train from step 0 over them: name one with checkpoint.resume, or move them away to start "
           "afresh");
  return "";
}

bool resume_may_change(const std::string& key) {
  static const char* const kFree[] = {
      // how long to train
      "trainer.max_steps", "trainer.epochs", "trainer.early_stop_patience", "trainer.max_nonfinite_steps",
      // evaluation, logging and checkpoint cadence and retention
      "trainer.eval_every", "trainer.eval_batches", "trainer.log_every", "checkpoint.every", "checkpoint.keep_last",
      "checkpoint.keep_best", "checkpoint.monitor", "checkpoint.monitor_mode", "checkpoint.resume", "checkpoint.dir",
      // where and on what
      "run.name", "run.out_dir", "run.device", "run.deterministic",
      // the same step computed another way (the global batch is its own key)
      "trainer.micro_batch_size", "trainer.chunk_len", "trainer.activation_checkpointing",
      // the same data from another place: the data fingerprint check refuses other tokens, labels or splits
      "data.path", "data.val_path", "data.class_files", "tokenizer.path",
      // the checkpoint's weights replace the initial ones
      "model.init_from"};
  for (const char* k : kFree)
    if (key == k) return true;
  return key.rfind("logging.", 0) == 0 || key.rfind("distributed.", 0) == 0;
}

namespace {

// Keys whose default differs from the behaviour before they existed, with the value that keeps that behaviour.
const std::map<std::string, std::string>& pre_key_values() {
  static const std::map<std::string, std::string> v = {{"data.reset_at_document_end", "false"}};
  return v;
}

}  // namespace

std::vector<std::string> keep_pre_key_behaviour(TrainConfig& c, const std::string& checkpoint_yaml) {
  const std::map<std::string, std::string> before = config_values_from_yaml(checkpoint_yaml, "the checkpoint's config");
  const std::map<std::string, std::string> now = config_values(c);
  std::vector<std::string> notes;
  for (const auto& [key, value] : pre_key_values()) {
    if (before.count(key) || now.at(key) == value) continue;
    apply_overrides(c, {key + "=" + value});
    notes.push_back(
        str(key, ": ", value, " (the checkpoint was written before the key existed, and trained that way)"));
  }
  return notes;
}

std::vector<ConfigChange> config_changes(const std::string& old_yaml, const TrainConfig& now) {
  const std::map<std::string, std::string> before = config_values_from_yaml(old_yaml, "the checkpoint's config");
  const std::map<std::string, std::string> after = config_values(now);
  std::vector<ConfigChange> out;
  for (const schema::Key& k : schema::keys()) {
    auto b = before.find(k.path);
    const auto legacy = pre_key_values().find(k.path);
    const std::string old = b != before.end()                  ? b->second
                            : legacy != pre_key_values().end() ? legacy->second
                                                               : config_default_text(k.path);
    const std::string& cur = after.at(k.path);
    if (old != cur) out.push_back({k.path, old.empty() ? "(absent)" : old, cur, resume_may_change(k.path)});
  }
  return out;
}

std::string describe_changes(const std::vector<ConfigChange>& changes) {
  std::string s;
  for (const ConfigChange& c : changes) s += str(s.empty() ? "" : "; ", c.key, ": ", c.before, " -> ", c.after);
  return s;
}

std::string write_run_config(const TrainConfig& c, bool resumed) {
  const std::string yaml = dump_train_config(c);
  const std::filesystem::path dir(c.run.out_dir);
  std::string name = "config.yaml", newest = "config.yaml";
  std::error_code ec;
  for (int k = 1; resumed; ++k) {
    name = str("config.resume-", k, ".yaml");
    if (!std::filesystem::exists(dir / name, ec)) break;
    newest = name;
  }
  if (resumed) {  // the same config as the last one kept: name that file rather than keep a copy
    std::vector<unsigned char> last;
    if (read_whole_file((dir / newest).string(), &last) == 0 && std::string(last.begin(), last.end()) == yaml)
      return newest;
  }
  write_file_atomic((dir / name).string(), yaml.data(), yaml.size());
  return name;
}

void append_start_record(const TrainConfig& c, const nlohmann::json& record) {
  const std::string path = (std::filesystem::path(c.run.out_dir) / "starts.jsonl").string();
  nlohmann::json r = record;
  r["time"] = utc_now();
  r["host"] = host_name();
  r["pid"] = static_cast<int64_t>(::getpid());
  std::ofstream f(path, std::ios::app | std::ios::binary);
  f << r.dump() << "\n";
  f.flush();
  MT_CHECK(f.good(), ErrorKind::Io, path, ": cannot append the start record: ", std::strerror(errno));
}

std::string command_line() {
  std::string s;
  for (const std::string& a : process_args()) s += (s.empty() ? "" : " ") + quote_arg(a);
  return s;
}

}  // namespace mt::train
