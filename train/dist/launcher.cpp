#include "train/dist/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "train/dist/error_relay.h"

namespace mt::train {

namespace {

std::vector<std::string> g_args;
volatile sig_atomic_t g_forward = 0;
extern "C" void on_launcher_signal(int sig) { g_forward = sig; }

int free_local_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  MT_CHECK(s >= 0, ErrorKind::Distributed, "launcher: socket: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(s);
  MT_CHECK(ok, ErrorKind::Distributed, "launcher: cannot find a free port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return str("exited with code ", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const char* n = ::strsignal(WTERMSIG(st));
    return str("was killed by signal ", WTERMSIG(st), " (", n ? n : "?", ")");
  }
  return "stopped";
}

}  // namespace

void set_process_args(int argc, char** argv) { g_args.assign(argv, argv + argc); }
const std::vector<std::string>& process_args() { return g_args; }

std::vector<std::string> child_rank_args() {
  std::vector<std::string> out;
  for (size_t i = 0; i < g_args.size(); ++i) {
    if (g_args[i] == "--nproc") {
      ++i;  // and its value
      continue;
    }
    if (g_args[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(g_args[i]);
  }
  return out;
}

int launch_local_ranks(int nproc, const std::vector<std::string>& args, double grace_s) {
  MT_CHECK(!args.empty(), ErrorKind::Internal, "launcher: no arguments recorded");
  const char* mp = std::getenv("MASTER_PORT");
  const int port = mp && *mp ? std::atoi(mp) : free_local_port();
  const pid_t self = ::getpid();

  struct sigaction sa {
  }, old_int{}, old_term{}, old_hup{};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGHUP, nullptr, &old_hup);
  const bool forward_hup = old_hup.sa_handler != SIG_IGN;  // under nohup the ranks ignore it too
  if (forward_hup) ::sigaction(SIGHUP, &sa, nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  // Each rank's stderr is a pipe to the launcher, which relays it (an error every rank reports appears once).
  std::vector<int> err_pipes(static_cast<size_t>(nproc), -1);
  ErrorLineRelay relay(STDERR_FILENO, nproc);
  struct ClosePipes {
    std::vector<int>& fds;
    ~ClosePipes() {
      for (int fd : fds)
        if (fd >= 0) ::close(fd);
    }
  } close_pipes{err_pipes};

  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  std::vector<char> alive(static_cast<size_t>(nproc), 0);
  auto kill_all = [&](int sig) {
    for (int r = 0; r < nproc; ++r)
      if (alive[static_cast<size_t>(r)]) ::kill(pids[static_cast<size_t>(r)], sig);
  };
  for (int r = 0; r < nproc; ++r) {
    int pfd[2];
    if (::pipe2(pfd, O_CLOEXEC) != 0) {
      const int e = errno;
      kill_all(SIGKILL);
      throw_error(ErrorKind::Distributed, str("launcher: cannot start rank ", r, ": pipe: ", std::strerror(e)));
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int e = errno;
      ::close(pfd[0]);
      ::close(pfd[1]);
      kill_all(SIGKILL);
      throw_error(ErrorKind::Distributed, str("launcher: cannot start rank ", r, ": fork: ", std::strerror(e)));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != self) ::_exit(static_cast<int>(ErrorKind::Distributed));  // the launcher is already gone
      ::dup2(pfd[1], STDERR_FILENO);  // the copy is not close-on-exec; the pipe's own fds are
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      if (forward_hup) ::signal(SIGHUP, SIG_DFL);
      const std::string rs = std::to_string(r);
      ::setenv("RANK", rs.c_str(), 1);
      ::setenv("LOCAL_RANK", rs.c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> av;
      for (const std::string& a : args) av.push_back(const_cast<char*>(a.c_str()));
      av.push_back(nullptr);
      ::execv("/proc/self/exe", av.data());
      std::fprintf(stderr, "mamba-train: error: launcher: cannot start rank %d: exec: %s\n", r, std::strerror(errno));
      ::_exit(static_cast<int>(ErrorKind::Distributed));
    }
    pids[static_cast<size_t>(r)] = pid;
    alive[static_cast<size_t>(r)] = 1;
    ::close(pfd[1]);
    ::fcntl(pfd[0], F_SETFL, ::fcntl(pfd[0], F_GETFL) | O_NONBLOCK);
    err_pipes[static_cast<size_t>(r)] = pfd[0];
  }

  int running = nproc, result = 0, forwarded = 0;
  bool failed = false;
  auto kill_deadline = std::chrono::steady_clock::time_point::max();
  // One exited rank (its status in *st), or -1 after a short nap (relaying the ranks' stderr) when none has exited.
  auto reap = [&](int* st, int nap_ms) {
    const pid_t pid = ::waitpid(-1, st, WNOHANG);
    int r = 0;
    while (pid > 0 && r < nproc && pids[static_cast<size_t>(r)] != pid) ++r;
    if (pid <= 0 || r == nproc) {
      if (!pump_rank_pipes(err_pipes, relay, nap_ms)) std::this_thread::sleep_for(std::chrono::milliseconds(nap_ms));
      return -1;
    }
    alive[static_cast<size_t>(r)] = 0;
    --running;
    return r;
  };
  while (running > 0) {
    if (g_forward != 0 && forwarded == 0) {  // the launcher was asked to stop: every rank checkpoints and stops
      forwarded = g_forward;
      kill_all(forwarded);
    }
    if (std::chrono::steady_clock::now() >= kill_deadline) {
      kill_all(SIGKILL);
      kill_deadline = std::chrono::steady_clock::time_point::max();
    }
    int st = 0;
    int r = reap(&st, 20);
    if (r < 0) continue;
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    // 130 / 143 / 129: the rank was stopped by SIGINT / SIGTERM / SIGHUP (forwarded, or sent to it alone) and
    // checkpointed; the ranks agree on the step, so the others follow.
    const bool stopped = WIFEXITED(st) && (WEXITSTATUS(st) == 128 + SIGINT || WEXITSTATUS(st) == 128 + SIGTERM ||
                                           WEXITSTATUS(st) == 128 + SIGHUP);
    if (stopped && result == 0) result = WEXITSTATUS(st);
    if (ok || stopped || failed) continue;
    failed = true;
    if (WIFEXITED(st) && WEXITSTATUS(st) == static_cast<int>(ErrorKind::Distributed) && running > 0) {
      // A peer failure: usually the consequence of another rank's death that has not been reaped yet. Look for
      // that root cause for a moment, so that the report names the rank that died rather than its first witness.
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (std::chrono::steady_clock::now() < until) {
        int st2 = 0;
        const int r2 = reap(&st2, 10);
        if (r2 < 0) continue;
        if (WIFSIGNALED(st2)) {
          r = r2;
          st = st2;
          break;
        }
        if (running == 0) break;
      }
    }
    result = WIFEXITED(st) ? WEXITSTATUS(st) : static_cast<int>(ErrorKind::Distributed);
    pump_rank_pipes(err_pipes, relay, 0);  // the ranks' own words before the launcher's
    if (!WIFEXITED(st))                    // it could not say why itself
      std::fprintf(stderr, "mamba-train: error: rank %d of %d %s\n", r, nproc, describe_status(st).c_str());
    if (!WIFEXITED(st) && running > 0) {
      // A rank that died by a signal leaves its peers blocked on a closed connection: give them a moment to
      // exit on their own, so that their error (which names the collective) reaches the user before SIGTERM.
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (running > 0 && std::chrono::steady_clock::now() < until) {
        int st2 = 0;
        reap(&st2, 10);
      }
    }
    if (running > 0) {
      std::fprintf(stderr, "mamba-train: rank %d of %d %s; stopping the other %d rank(s) (SIGKILL after %g s)\n", r,
                   nproc, describe_status(st).c_str(), running, grace_s);
      kill_all(SIGTERM);
      kill_deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
    }
  }
  // What the ranks wrote last (their error lines among it); their pipes close as they exit.
  const auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (pump_rank_pipes(err_pipes, relay, 50) && std::chrono::steady_clock::now() < drain_until) {
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGHUP, &old_hup, nullptr);
  return result;
}

}  // namespace mt::train
