// Training output (train/logger.h): the JSON-lines metrics file and the console progress lines.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "train/logger.h"

using namespace mt;
using namespace mt::train;
using nlohmann::json;

namespace {

// Temporary directories, removed when the test binary exits.
struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
} temp_dirs;

std::string temp_dir() {
  char tmpl[] = "/tmp/mt_logger_XXXXXX";
  EXPECT_NE(mkdtemp(tmpl), nullptr);
  temp_dirs.dirs.push_back(tmpl);
  return tmpl;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(line);
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

}  // namespace

TEST(MetricsLog, LinesParseBack) {
  const std::string path = temp_dir() + "/sub/dir/metrics.jsonl";  // parent directories are created
  {
    MetricsLog log(path, false);
    log.write({{"step", 10}, {"loss", 2.5}, {"lr", 3e-4}, {"tag", "train"}});
    log.write({{"step", 20}, {"eval", {{"loss", 2.25}, {"accuracy", 0.75}}}});
    // Flushed after each write: readable while the log is still open.
    EXPECT_EQ(lines_of(path).size(), 2u);
  }
  std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 2u);
  json a = json::parse(lines[0]), b = json::parse(lines[1]);
  EXPECT_EQ(a["step"], 10);
  EXPECT_DOUBLE_EQ(a["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(a["lr"].get<double>(), 3e-4);
  EXPECT_EQ(a["tag"], "train");
  EXPECT_FALSE(a.contains("nonfinite"));
  EXPECT_DOUBLE_EQ(b["eval"]["accuracy"].get<double>(), 0.75);
  // append = false starts over.
  {
    MetricsLog log(path, false);
    log.write({{"step", 1}});
  }
  EXPECT_EQ(lines_of(path).size(), 1u);
  EXPECT_THROW(MetricsLog(path, false).write(json::array({1, 2})), Error);
}

TEST(MetricsLog, NonFiniteBecomesNullAndIsListed) {
  const std::string path = temp_dir() + "/metrics.jsonl";
  {
    MetricsLog log(path, false);
    log.write({{"step", 5},
               {"loss", std::nan("")},
               {"grad_norm", INFINITY},
               {"lr", 1e-3},
               {"eval", {{"loss", -INFINITY}, {"ok", 1.0}}}});
  }
  std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_FALSE(contains(lines[0], "nan")) << lines[0];
  EXPECT_FALSE(contains(lines[0], "inf")) << lines[0];
  json r = json::parse(lines[0]);
  EXPECT_TRUE(r["loss"].is_null());
  EXPECT_TRUE(r["grad_norm"].is_null());
  EXPECT_TRUE(r["eval"]["loss"].is_null());
  EXPECT_DOUBLE_EQ(r["lr"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(r["eval"]["ok"].get<double>(), 1.0);
  std::vector<std::string> keys = r["nonfinite"].get<std::vector<std::string>>();
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"eval.loss", "grad_norm", "loss"}));

  json arr = {{"values", {1.0, NAN, 3.0}}};
  EXPECT_EQ(null_nonfinite(arr), (std::vector<std::string>{"values.1"}));
  EXPECT_TRUE(arr["values"][1].is_null());
}

TEST(MetricsLog, AppendRepairsPartialLastLine) {
  const std::string path = temp_dir() + "/metrics.jsonl";
  {
    MetricsLog log(path, false);
    log.write({{"step", 1}, {"loss", 3.0}});
    log.write({{"step", 2}, {"loss", 2.9}});
  }
  // A crash in mid-write leaves a fragment without a newline.
  { std::ofstream(path, std::ios::app) << "{\"step\": 3, \"lo"; }
  {
    MetricsLog log(path, true);
    log.write({{"step", 3}, {"loss", 2.8}});
  }
  std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u) << read_all(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    json r = json::parse(lines[i]);  // every line parses
    EXPECT_EQ(r["step"], static_cast<int>(i) + 1);
  }
  // A file that is one partial line only becomes empty before the append.
  { std::ofstream(path, std::ios::trunc) << "{\"ste"; }
  {
    MetricsLog log(path, true);
    log.write({{"step", 7}});
  }
  EXPECT_EQ(read_all(path), "{\"step\":7}\n");
  // A complete file is kept as it is; a missing one is created.
  {
    MetricsLog log(path, true);
    log.write({{"step", 8}});
  }
  EXPECT_EQ(read_all(path), "{\"step\":7}\n{\"step\":8}\n");
  const std::string fresh = temp_dir() + "/new.jsonl";
  {
    MetricsLog log(fresh, true);
    log.write({{"step", 1}});
  }
  EXPECT_EQ(lines_of(fresh).size(), 1u);
}

TEST(MetricsLog, LongPartialLineIsRepaired) {
  // The partial line is longer than the backwards-scan chunk.
  const std::string path = temp_dir() + "/metrics.jsonl";
  {
    MetricsLog log(path, false);
    log.write({{"step", 1}});
  }
  { std::ofstream(path, std::ios::app) << "{\"blob\": \"" << std::string(200000, 'x'); }
  {
    MetricsLog log(path, true);
    log.write({{"step", 2}});
  }
  EXPECT_EQ(read_all(path), "{\"step\":1}\n{\"step\":2}\n");
}

TEST(MetricsLog, ErrorsNameThePath) {
  try {
    MetricsLog log("/proc/definitely/not/writable/metrics.jsonl", false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_TRUE(contains(e.what(), "/proc/definitely/not/writable/metrics.jsonl")) << e.what();
  }
  const std::string dir = temp_dir();
  try {
    MetricsLog log(dir, false);  // a directory
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_TRUE(contains(e.what(), dir)) << e.what();
  }
  if (access("/dev/full", W_OK) == 0) {  // ENOSPC on every write
    MetricsLog log("/dev/full", false);
    try {
      log.write({{"step", 1}});
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Io);
      EXPECT_TRUE(contains(e.what(), "/dev/full")) << e.what();
    }
  }
}

TEST(Progress, Formatting) {
  EXPECT_EQ(format_duration(0), "0:00:00");
  EXPECT_EQ(format_duration(83.4), "0:01:23");
  EXPECT_EQ(format_duration(100000), "27:46:40");
  EXPECT_EQ(format_duration(NAN), "-:--:--");
  EXPECT_EQ(format_duration(-1), "-:--:--");
  EXPECT_EQ(format_rate(950), "950");
  EXPECT_EQ(format_rate(12345), "12.3k");
  EXPECT_EQ(format_rate(4560000), "4.56M");
  EXPECT_EQ(format_rate(999700), "1M");
  EXPECT_EQ(format_lr(3e-4), "3.00e-04");
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  testing::internal::CaptureStdout();
  {
    Progress p(1000, true);  // stdout is captured: not a TTY, so plain lines even with enabled = true
    EXPECT_FALSE(p.tty());
    p.update(10, 2.345678, 3e-4, 0.8125, 1.0, 12345.0, 0);
    p.message("eval: loss 2.1000");
    p.update(20, 2.25, 2.5e-4, 1.5, 65536.0, 2.5e6, 3);
    p.finish();
  }
  const std::string out = testing::internal::GetCapturedStdout();
  std::vector<std::string> lines;
  std::stringstream ss(out);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_FALSE(contains(out, "\r")) << out;
  EXPECT_FALSE(contains(out, "\033")) << out;
  EXPECT_TRUE(contains(lines[0], "step 10/1000")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "loss 2.3457")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "lr 3.00e-04")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "gnorm 0.8125")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "tok/s 12.3k")) << lines[0];
  EXPECT_TRUE(contains(lines[0], "eta ")) << lines[0];
  EXPECT_FALSE(contains(lines[0], "scale")) << "loss scale 1 is not shown: " << lines[0];
  EXPECT_FALSE(contains(lines[0], "skipped")) << lines[0];
  EXPECT_EQ(lines[1], "eval: loss 2.1000");
  EXPECT_TRUE(contains(lines[2], "step 20/1000")) << lines[2];
  EXPECT_TRUE(contains(lines[2], "tok/s 2.5M")) << lines[2];
  EXPECT_TRUE(contains(lines[2], "scale 65536")) << lines[2];
  EXPECT_TRUE(contains(lines[2], "skipped 3")) << lines[2];

  // Each progress line is "step S/T" followed by key-value pairs: parse them back.
  std::stringstream fields(lines[2]);
  std::string key, value;
  std::map<std::string, std::string> kv;
  while (fields >> key >> value) kv[key] = value;
  EXPECT_EQ(kv["step"], "20/1000");
  EXPECT_DOUBLE_EQ(std::stod(kv["loss"]), 2.25);
  EXPECT_DOUBLE_EQ(std::stod(kv["lr"]), 2.5e-4);
  EXPECT_DOUBLE_EQ(std::stod(kv["gnorm"]), 1.5);
  EXPECT_EQ(kv["skipped"], "3");
  const std::string eta = kv["eta"];  // h:mm:ss
  ASSERT_EQ(eta.size(), 7u) << eta;
  EXPECT_EQ(eta[1], ':');
  EXPECT_EQ(eta[4], ':');
}

TEST(Progress, NonFiniteLossIsShown) {
  testing::internal::CaptureStdout();
  {
    Progress p(10, false);
    p.update(1, NAN, 1e-3, INFINITY, 1.0, 100.0, 1);
  }
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_TRUE(contains(out, "loss nan")) << out;
  EXPECT_TRUE(contains(out, "gnorm inf")) << out;
  EXPECT_TRUE(contains(out, "skipped 1")) << out;
}

TEST(Progress, BarOnATerminal) {
  // Run Progress in a child whose stdout is a pseudo-terminal, and read what it drew.
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminals here";
  const std::string slave = ptsname(master);
  std::fflush(stdout);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = open(slave.c_str(), O_RDWR | O_NOCTTY);
    if (fd < 0 || dup2(fd, 1) < 0) _exit(3);
    {
      Progress p(100, true, 40);  // a resumed run: starts at step 40
      if (!p.tty()) _exit(4);
      p.update(50, 1.5, 1e-3, 0.5, 1.0, 5000.0, 0);
      p.message("checkpoint saved");
      p.update(100, 1.25, 1e-4, 0.25, 1.0, 5000.0, 0);
      p.finish();
    }
    std::fflush(stdout);
    _exit(0);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO once the child has closed the terminal
    out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  ASSERT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_TRUE(contains(out, "\r[############............] 50/100  50%  loss 1.5000")) << out;
  EXPECT_TRUE(contains(out, "gnorm 0.5  5k tok/s  eta ")) << out;
  EXPECT_TRUE(contains(out, "\r\033[Kcheckpoint saved")) << out;  // the message erases the bar line first
  EXPECT_TRUE(contains(out, "[########################] 100/100 100%  loss 1.2500")) << out;
  EXPECT_TRUE(contains(out, "eta 0:00:00")) << out;  // nothing left
}
