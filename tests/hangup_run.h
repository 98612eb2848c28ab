// A command on a terminal that is closed under it, for the tests and the reliability harness: what a closed terminal
// window or a dropped ssh session does to a run (SIGHUP to the session, then EIO on every write to the terminal).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace mt::test {

struct HangupRun {
  int status = -1;       // wait status; -1 when it could not start, or had to be killed after the hangup
  bool reached = false;  // `until` became true before the deadline (or the command ended first: false)
  std::string out;       // what it printed on the terminal before the hangup
};

// Runs `sh -c cmd` from `cwd` as the leader of a new session whose controlling terminal is a pseudo-terminal (stdin,
// stdout and stderr). Reads its output (a full terminal would block it) until until() holds or `seconds` pass, then
// closes the master side, and waits up to `seconds` more for it to end (SIGKILL after that). Safe to call from one of
// several threads.
inline HangupRun run_then_hang_up(const std::string& cwd, const std::string& cmd, const std::function<bool()>& until,
                                  int seconds) {
  HangupRun r;
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  char slave[128];
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0 ||
      ::ptsname_r(master, slave, sizeof slave) != 0) {
    if (master >= 0) ::close(master);
    return r;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    ::setsid();
    const int fd = ::open(slave, O_RDWR);  // becomes the controlling terminal of the new session
    if (fd < 0 || ::chdir(cwd.c_str()) != 0) ::_exit(127);
    ::dup2(fd, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid < 0) {
    ::close(master);
    return r;
  }
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  bool ended = false;
  while (std::chrono::steady_clock::now() < deadline) {
    char buf[4096];
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) r.out.append(buf, static_cast<size_t>(n));
    if ((r.reached = until())) break;
    if (::waitpid(pid, &r.status, WNOHANG) == pid) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::close(master);  // hang up
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!ended && ::waitpid(pid, &r.status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() > deadline) {  // it did not stop: a failure, not a hung test
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      r.status = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return r;
}

}  // namespace mt::test
