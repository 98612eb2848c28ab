// The fault handler of the test builds (core/fault_hook.h): linked into the test executables and into
// mamba-train-faults, never into mamba-train. Reads MT_FAULT at the first fault point:
//
//   MT_FAULT="SPEC[;SPEC...]"   SPEC = SITE[=VALUE][#K][@RANK]:ACTION
//   SITE    a fault site (step_end, loss, grad, checkpoint:data:written, write, fsync, ...)
//   VALUE   fire only when the site's value equals this (a step); omitted: every time
//   K       fire only at the K-th matching hit (1 = the first); omitted: every matching hit
//   RANK    fire only on this rank (environment RANK, 0 when unset); omitted: every rank
//   ACTION  kill (SIGKILL), stop (SIGSTOP: a frozen rank), term / hup (SIGTERM / SIGHUP to itself), exit=N (_exit(N)),
//           nan (the caller injects NaN),
//           enospc / eio (the caller fails with that errno), fail (the caller fails: an allocation)
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "core/fault_hook.h"

namespace {

struct Spec {
  std::string site, action;
  bool has_value = false, has_rank = false;
  long long value = 0, nth = 0, hits = 0;
  int rank = 0, code = 0;
};

std::vector<Spec> parse(const char* env) {
  std::vector<Spec> out;
  std::string all = env ? env : "";
  size_t pos = 0;
  while (pos <= all.size() && !all.empty()) {
    size_t end = all.find(';', pos);
    if (end == std::string::npos) end = all.size();
    std::string item = all.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t colon = item.rfind(':');
    Spec s;
    if (colon == std::string::npos) {
      std::fprintf(stderr, "MT_FAULT: '%s' has no ':ACTION'\n", item.c_str());
      std::_Exit(99);
    }
    s.action = item.substr(colon + 1);
    std::string head = item.substr(0, colon);
    const size_t at = head.find('@');
    if (at != std::string::npos) {
      s.has_rank = true;
      s.rank = std::atoi(head.c_str() + at + 1);
      head = head.substr(0, at);
    }
    const size_t hash = head.find('#');
    if (hash != std::string::npos) {
      s.nth = std::atoll(head.c_str() + hash + 1);
      head = head.substr(0, hash);
    }
    const size_t eq = head.find('=');
    if (eq != std::string::npos) {
      s.has_value = true;
      s.value = std::atoll(head.c_str() + eq + 1);
      head = head.substr(0, eq);
    }
    s.site = head;
    if (s.action.rfind("exit=", 0) == 0) {
      s.code = std::atoi(s.action.c_str() + 5);
      s.action = "exit";
    }
    if (s.action != "kill" && s.action != "stop" && s.action != "term" && s.action != "hup" && s.action != "exit" &&
        s.action != "nan" && s.action != "enospc" && s.action != "eio" && s.action != "fail") {
      std::fprintf(stderr, "MT_FAULT: unknown action '%s'\n", s.action.c_str());
      std::_Exit(99);
    }
    out.push_back(s);
    if (end == all.size()) break;
  }
  return out;
}

bool handle(const char* site, int64_t value, int* err) {
  static std::once_flag once;
  static std::vector<Spec> specs;
  static int rank = 0;
  std::call_once(once, [] {
    specs = parse(std::getenv("MT_FAULT"));
    const char* r = std::getenv("RANK");
    rank = r ? std::atoi(r) : 0;
  });
  static std::mutex mu;  // hit counters: sites run on several threads (OpenMP, the gradient thread)
  if (specs.empty()) return false;
  std::lock_guard<std::mutex> lock(mu);
  for (Spec& s : specs) {
    if (s.site != site || (s.has_value && s.value != value) || (s.has_rank && s.rank != rank)) continue;
    if (s.nth > 0 && ++s.hits != s.nth) continue;
    if (s.action == "kill") ::raise(SIGKILL);
    if (s.action == "stop") ::raise(SIGSTOP);
    if (s.action == "term" || s.action == "hup") {
      ::raise(s.action == "term" ? SIGTERM : SIGHUP);  // the trainer's handler notes it and returns here
      return false;
    }
    if (s.action == "exit") {
      std::fflush(nullptr);
      ::_exit(s.code);
    }
    if (err) *err = s.action == "enospc" ? ENOSPC : s.action == "eio" ? EIO : 0;
    return true;
  }
  return false;
}

const bool registered = (mt::set_fault_handler(&handle), true);

}  // namespace
