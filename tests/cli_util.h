// Running the mamba-train binary from tests: exit code and combined output.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace mt::test {

struct CliResult {
  int code;         // exit status; -1 when the process did not exit normally
  std::string out;  // stdout and stderr
};

// Runs `<prefix> <binary> <args>` through the shell (args are shell words; prefix sets variables, e.g.
// "MT_FAULT='...'"), from the source tree's root so that the configs' relative data paths resolve. A program killed by
// signal N exits the shell with 128 + N.
inline CliResult run_program(const std::string& prefix, const std::string& binary, const std::string& args) {
  const std::string cmd = "cd '" + std::string(MT_SOURCE_DIR) + "' && " + prefix + " " + binary + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// `mamba-train <args>` (run_program without a prefix).
inline CliResult run_cli(const std::string& args) { return run_program("", MT_BINARY, args); }

// A new temporary file holding `content`; the caller unlinks it.
inline std::string write_temp(const std::string& content) {
  char tmpl[] = "/tmp/mt_cli_XXXXXX";
  int fd = mkstemp(tmpl);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(tmpl) << content;
  return tmpl;
}

// A new empty temporary directory.
inline std::string temp_dir(const std::string& tag) {
  std::string tmpl = "/tmp/mt_" + tag + "_XXXXXX";
  char* p = mkdtemp(tmpl.data());
  EXPECT_NE(p, nullptr);
  return tmpl;
}

inline bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

}  // namespace mt::test
