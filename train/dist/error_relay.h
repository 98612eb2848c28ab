// The `--nproc` launcher's view of its ranks' stderr (train/dist/launcher.h): every rank writes into a pipe, the
// launcher relays whole lines to its own stderr and prints each distinct "mamba-train: error: ..." line once. A
// config or data error that every rank finds (a batch that does not split over the ranks, a truncated data file) is
// then one error line, as in a single process; different errors (a rank naming its peer) all appear.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace mt::train {

class ErrorLineRelay {
 public:
  // out_fd: where relayed lines go (the launcher's stderr). Write errors (a closed terminal: EIO, EPIPE) are ignored.
  ErrorLineRelay(int out_fd, int sources);

  // n bytes that source `src` wrote. Complete lines are relayed at once (a line longer than 64 KiB in pieces).
  void add(int src, const char* data, size_t n);
  // Source `src` closed its stream: a last line without '\n' is relayed.
  void finish(int src);

 private:
  void line(const std::string& l);  // one line, '\n' included when it had one

  int out_fd_;
  std::vector<std::string> partial_;
  std::set<std::string> errors_seen_;
};

// Reads what is available on each open fd of `fds` (non-blocking pipes; a closed one is set to -1 and finished),
// waiting up to timeout_ms for the first data. Returns false when every fd is closed.
bool pump_rank_pipes(std::vector<int>& fds, ErrorLineRelay& relay, int timeout_ms);

}  // namespace mt::train
