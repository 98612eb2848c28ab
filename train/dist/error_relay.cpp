#include "train/dist/error_relay.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace mt::train {

namespace {

constexpr size_t kMaxLine = size_t{1} << 16;
const std::string kErrorPrefix = "mamba-train: error: ";

void write_ignoring_errors(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t w = ::write(fd, s.data() + done, s.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the terminal or pipe is gone: nothing useful left to do with the text
    done += static_cast<size_t>(w);
  }
}

}  // namespace

ErrorLineRelay::ErrorLineRelay(int out_fd, int sources) : out_fd_(out_fd), partial_(static_cast<size_t>(sources)) {}

void ErrorLineRelay::line(const std::string& l) {
  if (l.compare(0, kErrorPrefix.size(), kErrorPrefix) == 0) {
    std::string key = l;
    if (!key.empty() && key.back() == '\n') key.pop_back();
    if (!errors_seen_.insert(key).second) return;  // another rank said exactly this already
  }
  write_ignoring_errors(out_fd_, l);
}

void ErrorLineRelay::add(int src, const char* data, size_t n) {
  std::string& p = partial_[static_cast<size_t>(src)];
  for (size_t i = 0; i < n; ++i) {
    p += data[i];
    if (data[i] == '\n' || p.size() >= kMaxLine) {
      line(p);
      p.clear();
    }
  }
}

void ErrorLineRelay::finish(int src) {
  std::string& p = partial_[static_cast<size_t>(src)];
  if (!p.empty()) line(p);
  p.clear();
}

bool pump_rank_pipes(std::vector<int>& fds, ErrorLineRelay& relay, int timeout_ms) {
  std::vector<pollfd> pfds;
  std::vector<int> src;
  for (size_t r = 0; r < fds.size(); ++r) {
    if (fds[r] < 0) continue;
    pfds.push_back(pollfd{fds[r], POLLIN, 0});
    src.push_back(static_cast<int>(r));
  }
  if (pfds.empty()) return false;
  if (::poll(pfds.data(), pfds.size(), timeout_ms) <= 0) return true;  // nothing yet (or EINTR: try again later)
  char buf[4096];
  for (size_t k = 0; k < pfds.size(); ++k) {
    if (pfds[k].revents == 0) continue;
    const int r = src[k];
    for (;;) {  // drain what is there now
      const ssize_t n = ::read(fds[static_cast<size_t>(r)], buf, sizeof buf);
      if (n > 0) {
        relay.add(r, buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      relay.finish(r);  // end of file (every writer closed it), or an error: this pipe is done
      ::close(fds[static_cast<size_t>(r)]);
      fds[static_cast<size_t>(r)] = -1;
      break;
    }
  }
  for (int fd : fds)
    if (fd >= 0) return true;
  return false;
}

}  // namespace mt::train
