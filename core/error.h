// Errors: one user-facing exception type (mt::Error) and one macro family for library status codes.
//
// Library code never prints or exits; it throws. Only train/cli/main.cpp catches, prints
// "mamba-train: error: <message>" and returns the exit code of the error's kind (see ErrorKind).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mt {

// Documented process exit codes (README "Exit codes"). Values are stable: scripts depend on them.
enum class ErrorKind : int {
  Internal = 1,     // a bug: an invariant that should not fail did
  Usage = 2,        // bad command line
  Config = 3,       // bad YAML config or --set override
  Data = 4,         // bad data file, tokenizer file, id file
  Checkpoint = 5,   // bad / mismatched / corrupt checkpoint or weights file
  NonFinite = 6,    // training stopped after repeated inf/NaN
  OutOfMemory = 7,  // host or device allocation failed
  Distributed = 8,  // NCCL / rendezvous / peer failure
  Shape = 9,        // an op got tensors of the wrong shape / dtype / device (a programming error by the caller)
  Device = 10,      // CUDA / cuBLAS / cuDNN failure, or CUDA requested but unavailable
  Io = 11,          // I/O failure (ENOSPC, EIO, permissions)
  RunLocked = 12,   // the run directory is locked by another trainer (train/run_dir.h)
  NewestCheckpointInvalid = 13,  // `checkpoint verify`: the newest checkpoint does not verify (an older one may)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return static_cast<int>(kind_); }

 private:
  ErrorKind kind_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Concatenate anything streamable into a string: str("size ", n, " != ", m).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

[[noreturn]] void throw_error(ErrorKind kind, const std::string& msg);

}  // namespace mt

// MT_CHECK(cond, kind, parts...): throw mt::Error(kind, parts...) when cond is false.
#define MT_CHECK(cond, kind, ...)                                   \
  do {                                                              \
    if (!(cond)) ::mt::throw_error((kind), ::mt::str(__VA_ARGS__)); \
  } while (0)

// Shape / dtype / device validation inside ops.
#define MT_CHECK_SHAPE(cond, ...) MT_CHECK(cond, ::mt::ErrorKind::Shape, __VA_ARGS__)

// Internal invariants: a failure is a bug in mamba-train, reported with file and line.
#define MT_ASSERT(cond, ...)                                                                                        \
  do {                                                                                                              \
    if (!(cond))                                                                                                    \
      ::mt::throw_error(::mt::ErrorKind::Internal,                                                                  \
                        ::mt::str("internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " ", ##__VA_ARGS__)); \
  } while (0)
