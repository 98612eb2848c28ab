#include "train/dist/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace mt::train {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x4d54525aU;  // "MTRZ"

int parse_int(const char* name, const char* v, int lo, int hi) {
  int x = 0;
  const char* end = v + std::strlen(v);
  auto [p, ec] = std::from_chars(v, end, x);
  MT_CHECK(ec == std::errc() && p == end && *v != '\0', ErrorKind::Config, "environment ", name, "='", v,
           "' is not an integer");
  MT_CHECK(x >= lo && x <= hi, ErrorKind::Config, "environment ", name, "=", x, " is out of range [", lo, ", ", hi,
           "]");
  return x;
}

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits for `events` on fd until the deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms_left(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Sends / receives exactly n bytes before the deadline; an error string on failure, empty on success.
std::string send_all(int fd, const void* data, size_t n, Clock::time_point deadline) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT, deadline)) return "timed out sending";
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (w <= 0) return std::string("send failed: ") + std::strerror(errno);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}
std::string recv_all(int fd, void* data, size_t n, Clock::time_point deadline) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return "timed out receiving";
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r == 0) return "the peer closed the connection";
    if (r < 0) return std::string("recv failed: ") + std::strerror(errno);
    p += r;
    n -= static_cast<size_t>(r);
  }
  return {};
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

sockaddr_in resolve(const DistEnv& env) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(env.master_addr.c_str(), nullptr, &hints, &res);
  MT_CHECK(rc == 0 && res != nullptr, ErrorKind::Distributed, "rendezvous: cannot resolve MASTER_ADDR '",
           env.master_addr, "': ", ::gai_strerror(rc));
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  ::freeaddrinfo(res);
  a.sin_port = htons(static_cast<uint16_t>(env.master_port));
  return a;
}

std::string where(const DistEnv& env) { return env.master_addr + ":" + std::to_string(env.master_port); }

// Rank 0: accepts one connection per peer (hello checked), then welcomes them all. Returns fds indexed by rank.
std::vector<int> accept_peers(const DistEnv& env, Clock::time_point deadline) {
  Fd ls(::socket(AF_INET, SOCK_STREAM, 0));
  MT_CHECK(ls.fd >= 0, ErrorKind::Distributed, "rendezvous (rank 0): socket: ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = resolve(env);
  MT_CHECK(::bind(ls.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, ErrorKind::Distributed,
           "rendezvous (rank 0): cannot listen on ", where(env), ": ", std::strerror(errno));
  MT_CHECK(::listen(ls.fd, env.world_size) == 0, ErrorKind::Distributed,
           "rendezvous (rank 0): listen: ", std::strerror(errno));
  set_nonblocking(ls.fd);
  std::vector<Fd> peers(static_cast<size_t>(env.world_size));
  int arrived = 1;
  while (arrived < env.world_size) {
    if (!wait_fd(ls.fd, POLLIN, deadline)) {
      std::string missing;
      for (int r = 1; r < env.world_size; ++r)
        if (peers[static_cast<size_t>(r)].fd < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      throw_error(ErrorKind::Distributed, str("rendezvous (rank 0) on ", where(env), ": timed out with ", arrived,
                                              " of ", env.world_size, " ranks; missing rank(s) ", missing));
    }
    Fd c(::accept(ls.fd, nullptr, nullptr));
    if (c.fd < 0) continue;
    set_nonblocking(c.fd);
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint32_t hello[3];
    const std::string err = recv_all(c.fd, hello, sizeof hello, deadline);
    if (!err.empty() || hello[0] != kMagic) continue;  // not one of ours (a port scan, a stale job): ignore it
    const int world = static_cast<int>(hello[1]), rank = static_cast<int>(hello[2]);
    MT_CHECK(world == env.world_size, ErrorKind::Distributed, "rendezvous (rank 0) on ", where(env), ": rank ", rank,
             " says WORLD_SIZE=", world, ", rank 0 has ", env.world_size);
    MT_CHECK(rank >= 1 && rank < env.world_size, ErrorKind::Distributed, "rendezvous (rank 0) on ", where(env),
             ": a peer says it is rank ", rank, " of ", world);
    MT_CHECK(peers[static_cast<size_t>(rank)].fd < 0, ErrorKind::Distributed, "rendezvous (rank 0) on ", where(env),
             ": rank ", rank, " joined twice (two processes with the same RANK?)");
    peers[static_cast<size_t>(rank)] = std::move(c);
    ++arrived;
  }
  const uint32_t welcome[2] = {kMagic, static_cast<uint32_t>(env.world_size)};
  std::vector<int> out(static_cast<size_t>(env.world_size), -1);
  for (int r = 1; r < env.world_size; ++r) {
    const std::string err = send_all(peers[static_cast<size_t>(r)].fd, welcome, sizeof welcome, deadline);
    MT_CHECK(err.empty(), ErrorKind::Distributed, "rendezvous (rank 0) on ", where(env), ": welcoming rank ", r, ": ",
             err);
  }
  for (int r = 1; r < env.world_size; ++r) std::swap(out[static_cast<size_t>(r)], peers[static_cast<size_t>(r)].fd);
  return out;
}

// Rank > 0: connects to rank 0 (retrying until the deadline), says hello, waits for the welcome.
int connect_root(const DistEnv& env, Clock::time_point deadline) {
  const sockaddr_in a = resolve(env);
  std::string last = "no attempt";
  const int one = 1;
  while (ms_left(deadline) > 0) {
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    MT_CHECK(s.fd >= 0, ErrorKind::Distributed, "rendezvous (rank ", env.rank, "): socket: ", std::strerror(errno));
    if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      last = std::strerror(errno);
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_left(deadline))));
      continue;
    }
    set_nonblocking(s.fd);
    ::setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const uint32_t hello[3] = {kMagic, static_cast<uint32_t>(env.world_size), static_cast<uint32_t>(env.rank)};
    std::string err = send_all(s.fd, hello, sizeof hello, deadline);
    uint32_t welcome[2] = {0, 0};
    if (err.empty()) err = recv_all(s.fd, welcome, sizeof welcome, deadline);
    MT_CHECK(err.empty(), ErrorKind::Distributed, "rendezvous (rank ", env.rank, ") with rank 0 at ", where(env), ": ",
             err);
    MT_CHECK(welcome[0] == kMagic && welcome[1] == static_cast<uint32_t>(env.world_size), ErrorKind::Distributed,
             "rendezvous (rank ", env.rank, "): the process at ", where(env), " is not this job's rank 0");
    const int fd = s.fd;
    s.fd = -1;
    return fd;
  }
  throw_error(ErrorKind::Distributed, str("rendezvous (rank ", env.rank, "): could not reach rank 0 at ", where(env),
                                          " before the timeout (last error: ", last, ")"));
}

// One collective's header: what every rank sends rank 0 and what rank 0 answers.
struct MsgHeader {
  uint32_t magic = kMagic;
  uint32_t type = 0;  // 1 f32 sum, 2 f64 sum, 3 bytes broadcast
  uint64_t seq = 0;   // collectives done so far on this plane: ranks that disagree are caught at once
  uint64_t bytes = 0;
  uint32_t what_len = 0;
  uint32_t pad = 0;
};

}  // namespace

std::string first_slurm_host(const std::string& list) {
  // The first top-level item (commas inside brackets separate ranges, not hosts).
  int depth = 0;
  size_t end = 0;
  for (; end < list.size(); ++end) {
    if (list[end] == '[') ++depth;
    if (list[end] == ']' && --depth < 0) break;
    if (list[end] == ',' && depth == 0) break;
  }
  MT_CHECK(!list.empty() && depth == 0 && end > 0, ErrorKind::Config, "environment SLURM_JOB_NODELIST='", list,
           "' is not a Slurm node list");
  const std::string item = list.substr(0, end);
  // Each bracket holds ranges "a-b" or single numbers separated by commas: the first host takes the first number.
  std::string host;
  for (size_t i = 0; i < item.size(); ++i) {
    if (item[i] != '[') {
      host += item[i];
      continue;
    }
    const size_t close = item.find(']', i);
    MT_CHECK(close != std::string::npos, ErrorKind::Config, "environment SLURM_JOB_NODELIST='", list,
             "' is not a Slurm node list");
    const std::string first = item.substr(i + 1, item.find_first_of(",-]", i + 1) - i - 1);
    MT_CHECK(!first.empty() && first.find_first_not_of("0123456789") == std::string::npos, ErrorKind::Config,
             "environment SLURM_JOB_NODELIST='", list, "' is not a Slurm node list");
    host += first;
    i = close;
  }
  return host;
}

DistEnv dist_env_from(const std::function<const char*(const char*)>& getenv) {
  const char* names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
  int set = 0;
  for (const char* n : names) set += getenv(n) != nullptr;
  DistEnv e;
  const char* port_override = getenv("MT_RENDEZVOUS_PORT");
  const bool launcher = getenv("RANK") || getenv("WORLD_SIZE") || getenv("LOCAL_RANK");
  if (!launcher && getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
    e.world_size = parse_int("SLURM_NTASKS", getenv("SLURM_NTASKS"), 1, 1 << 20);
    if (e.world_size == 1) return DistEnv{};
    e.rank = parse_int("SLURM_PROCID", getenv("SLURM_PROCID"), 0, e.world_size - 1);
    MT_CHECK(getenv("SLURM_LOCALID") != nullptr, ErrorKind::Config,
             "environment: SLURM_LOCALID is not set (start the ranks with srun, one task per GPU)");
    e.local_rank = parse_int("SLURM_LOCALID", getenv("SLURM_LOCALID"), 0, 1 << 20);
    if (getenv("MASTER_ADDR")) {
      e.master_addr = getenv("MASTER_ADDR");
    } else {
      const char* list = getenv("SLURM_JOB_NODELIST") ? getenv("SLURM_JOB_NODELIST") : getenv("SLURM_NODELIST");
      MT_CHECK(list != nullptr, ErrorKind::Config,
               "environment: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set (rank 0's host is unknown)");
      e.master_addr = first_slurm_host(list);
    }
    MT_CHECK(!e.master_addr.empty(), ErrorKind::Config, "environment: MASTER_ADDR is empty");
    if (getenv("MASTER_PORT")) {
      e.master_port = parse_int("MASTER_PORT", getenv("MASTER_PORT"), 1, 65535);
    } else {
      const char* job = getenv("SLURM_JOB_ID");
      e.master_port = job ? 20000 + parse_int("SLURM_JOB_ID", job, 0, 2147483647) % 10000 : 29500;
    }
    if (port_override) e.master_port = parse_int("MT_RENDEZVOUS_PORT", port_override, 1, 65535);
    return e;
  }
  if (set == 0) return e;
  for (const char* n : names)
    MT_CHECK(getenv(n) != nullptr, ErrorKind::Config, "environment: ", n,
             " is not set (a distributed launch needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)");
  e.world_size = parse_int("WORLD_SIZE", getenv("WORLD_SIZE"), 1, 1 << 20);
  e.rank = parse_int("RANK", getenv("RANK"), 0, e.world_size - 1);
  e.local_rank = parse_int("LOCAL_RANK", getenv("LOCAL_RANK"), 0, 1 << 20);
  e.master_port = parse_int("MASTER_PORT", getenv("MASTER_PORT"), 1, 65535);
  e.master_addr = getenv("MASTER_ADDR");
  MT_CHECK(!e.master_addr.empty(), ErrorKind::Config, "environment: MASTER_ADDR is empty");
  if (port_override) {
    e.master_port = parse_int("MT_RENDEZVOUS_PORT", port_override, 1, 65535);
  } else if (getenv("TORCHELASTIC_RUN_ID")) {  // torchrun's store holds MASTER_PORT
    MT_CHECK(e.master_port < 65535, ErrorKind::Config,
             "environment MASTER_PORT=65535 under torchrun: the rendezvous needs MASTER_PORT + 1 (set "
             "MT_RENDEZVOUS_PORT)");
    ++e.master_port;
  }
  return e;
}

DistEnv dist_env_from_process() {
  return dist_env_from([](const char* n) { return std::getenv(n); });
}

std::vector<uint8_t> rendezvous_broadcast(const DistEnv& env, const std::vector<uint8_t>& payload, double timeout_s) {
  if (env.world_size <= 1) return payload;
  ControlPlane cp(env, timeout_s);
  return cp.broadcast(payload, "rendezvous payload");
}

ControlPlane::ControlPlane(const DistEnv& env, double timeout_s) : env_(env), timeout_s_(timeout_s) {
  if (env.world_size <= 1) return;
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  if (env.rank == 0) {
    fds_ = accept_peers(env, deadline);
  } else {
    fds_.assign(1, connect_root(env, deadline));
  }
}

ControlPlane::~ControlPlane() {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

std::string ControlPlane::fail_prefix(const std::string& what) const {
  return str("rank ", env_.rank, " of ", env_.world_size, ": ", what, " (collective #", seq_ + 1, ")");
}

void ControlPlane::exchange(uint32_t type, void* data, size_t bytes, const std::string& what,
                            const std::function<void(const void* peer_data, size_t peer_bytes)>& combine) {
  if (env_.world_size <= 1) return;
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s_ * 1000));
  MsgHeader h;
  h.type = type;
  h.seq = ++seq_;
  h.bytes = bytes;
  h.what_len = static_cast<uint32_t>(std::min<size_t>(what.size(), 200));
  auto check = [&](const std::string& err, int peer, const char* doing) {
    if (err.empty()) return;
    const bool timeout = err.rfind("timed out", 0) == 0;
    throw_error(ErrorKind::Distributed, str(fail_prefix(what), ": ", doing, " rank ", peer, ": ", err,
                                            timeout ? str(" after ", timeout_s_, " s (distributed.timeout_s): rank ",
                                                          peer, " died, hangs or is in another step")
                                                    : std::string(" (the rank died or closed its connection)")));
  };
  if (env_.rank != 0) {
    const int fd = fds_[0];
    check(send_all(fd, &h, sizeof h, deadline), 0, "sending to");
    check(send_all(fd, what.data(), h.what_len, deadline), 0, "sending to");
    check(send_all(fd, data, bytes, deadline), 0, "sending to");
    MsgHeader r;
    check(recv_all(fd, &r, sizeof r, deadline), 0, "waiting for");
    MT_CHECK(r.magic == kMagic && r.seq == h.seq && r.type == h.type && r.bytes == h.bytes, ErrorKind::Distributed,
             fail_prefix(what), ": rank 0 answered collective #", r.seq, " (type ", r.type, ", ", r.bytes,
             " bytes): the ranks disagree on what they are doing");
    check(recv_all(fd, data, bytes, deadline), 0, "waiting for");
    return;
  }
  std::vector<unsigned char> buf(bytes);
  for (int p = 1; p < env_.world_size; ++p) {
    const int fd = fds_[static_cast<size_t>(p)];
    MsgHeader r;
    check(recv_all(fd, &r, sizeof r, deadline), p, "waiting for");
    std::string pwhat(std::min<uint32_t>(r.what_len, 200), '\0');
    if (r.magic == kMagic) check(recv_all(fd, &pwhat[0], pwhat.size(), deadline), p, "waiting for");
    MT_CHECK(r.magic == kMagic && r.seq == h.seq && r.type == h.type && r.bytes == h.bytes, ErrorKind::Distributed,
             fail_prefix(what), ": rank ", p, " is at collective #", r.seq, " '", pwhat, "' (", r.bytes,
             " bytes): the ranks disagree on what they are doing");
    check(recv_all(fd, buf.data(), bytes, deadline), p, "waiting for");
    if (combine) combine(buf.data(), bytes);
  }
  for (int p = 1; p < env_.world_size; ++p) {
    const int fd = fds_[static_cast<size_t>(p)];
    check(send_all(fd, &h, sizeof h, deadline), p, "answering");
    check(send_all(fd, data, bytes, deadline), p, "answering");
  }
}

void ControlPlane::all_reduce_sum(float* v, size_t n, const std::string& what) {
  exchange(1, v, n * sizeof(float), what, [&](const void* pd, size_t) {
    const float* x = static_cast<const float*>(pd);
    for (size_t i = 0; i < n; ++i) v[i] += x[i];
  });
}

void ControlPlane::all_reduce_sum(double* v, size_t n, const std::string& what) {
  exchange(2, v, n * sizeof(double), what, [&](const void* pd, size_t) {
    const double* x = static_cast<const double*>(pd);
    for (size_t i = 0; i < n; ++i) v[i] += x[i];
  });
}

void ControlPlane::barrier(const std::string& what) { exchange(2, nullptr, 0, what, nullptr); }

std::vector<uint8_t> ControlPlane::broadcast(const std::vector<uint8_t>& from_root, const std::string& what) {
  if (env_.world_size <= 1) return from_root;
  uint64_t n = from_root.size();
  // Size first (rank 0's; the others' are ignored), then the bytes: peers send as many bytes as they will receive.
  exchange(3, &n, sizeof n, what + " (size)", nullptr);
  std::vector<uint8_t> out = env_.rank == 0 ? from_root : std::vector<uint8_t>(n);
  MT_CHECK(n <= (uint64_t{1} << 32), ErrorKind::Distributed, fail_prefix(what), ": rank 0 announced ", n, " bytes");
  exchange(3, out.data(), out.size(), what, nullptr);
  return out;
}

}  // namespace mt::train
