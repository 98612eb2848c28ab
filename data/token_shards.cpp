#include "data/token_shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "data/gz_reader.h"
#include "data/text_dataset.h"  // fnv1a64

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are read and written in host byte order, which must be little-endian"
#endif

namespace mt::data {

namespace {

constexpr size_t kHeaderChecked = 120;  // the header checksum covers bytes [0, 120)

template <typename T>
void put_le(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
T get_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

[[noreturn]] void bad(const std::string& path, const std::string& problem) {
  throw Error(ErrorKind::Data, str("token shard '", path, "': ", problem));
}

std::string dir_of(const std::string& path) {
  const size_t s = path.rfind('/');
  if (s == std::string::npos) return ".";
  return s == 0 ? "/" : path.substr(0, s);
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorKind::Io, str(dir, ": cannot open the directory to fsync it: ", std::strerror(errno)));
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  if (err != 0 && err != EINVAL)  // some filesystems refuse fsync on directories; the rename is atomic anyway
    throw Error(ErrorKind::Io, str(dir, ": fsync of the directory failed: ", std::strerror(err)));
}

void write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw Error(ErrorKind::Io, str(path, ": write failed: ", std::strerror(errno)));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

uint32_t shard_dtype_for_vocab(uint64_t vocab_size) {
  if (vocab_size <= 256) return 1;
  if (vocab_size <= 65536) return 2;
  return 4;
}

std::string shard_dtype_name(uint32_t dtype_bytes) { return str("u", 8 * dtype_bytes); }

std::vector<uint8_t> encode_shard_header(const ShardInfo& info) {
  std::vector<uint8_t> h(kShardHeaderBytes, 0);
  std::memcpy(h.data(), kShardMagic, 8);
  put_le<uint32_t>(&h[8], info.version);
  put_le<uint32_t>(&h[12], info.dtype_bytes);
  put_le<uint32_t>(&h[16], info.vocab_size);
  put_le<uint32_t>(&h[20], info.eod_id);
  put_le<uint64_t>(&h[24], info.num_tokens);
  put_le<uint64_t>(&h[32], info.num_documents);
  put_le<uint64_t>(&h[40], info.payload_fnv1a64);
  MT_CHECK(info.tokenizer.size() < kShardTokenizerBytes, ErrorKind::Internal, "token shard: tokenizer name '",
           info.tokenizer, "' is longer than ", kShardTokenizerBytes - 1, " bytes");
  std::memcpy(&h[48], info.tokenizer.data(), info.tokenizer.size());
  put_le<uint64_t>(&h[kHeaderChecked], fnv1a64(h.data(), kHeaderChecked));
  return h;
}

ShardInfo decode_shard_header(const uint8_t* b, size_t n, const std::string& path) {
  if (n == 0) bad(path, "empty file (0 bytes), not a mamba-train token shard");
  if (std::memcmp(b, kShardMagic, std::min<size_t>(n, 8)) != 0)
    bad(path, str("not a mamba-train token shard (the file does not start with \"", kShardMagic, "\")"));
  if (n < kShardHeaderBytes)
    bad(path, str("truncated header: the file has ", n, " bytes, the header alone needs ", kShardHeaderBytes));
  ShardInfo s;
  s.version = get_le<uint32_t>(b + 8);
  if (s.version != kShardVersion)
    bad(path, str("unsupported format version ", s.version, " (this build reads version ", kShardVersion, ")"));
  const uint64_t stored = get_le<uint64_t>(b + kHeaderChecked), computed = fnv1a64(b, kHeaderChecked);
  if (stored != computed)
    bad(path, str("header checksum mismatch (stored ", hex64(stored), ", computed ", hex64(computed),
                  "): the header is corrupt"));
  s.dtype_bytes = get_le<uint32_t>(b + 12);
  if (s.dtype_bytes != 1 && s.dtype_bytes != 2 && s.dtype_bytes != 4)
    bad(path, str("bad dtype code ", s.dtype_bytes, " (expected 1 = u8, 2 = u16 or 4 = u32)"));
  s.vocab_size = get_le<uint32_t>(b + 16);
  if (s.vocab_size == 0) bad(path, "vocabulary size 0");
  if (s.dtype_bytes < 4 && s.vocab_size > (1ull << (8 * s.dtype_bytes)))
    bad(path, str("vocabulary size ", s.vocab_size, " does not fit dtype ", shard_dtype_name(s.dtype_bytes)));
  s.eod_id = get_le<uint32_t>(b + 20);
  if (s.eod_id != kShardNoEod && s.eod_id >= s.vocab_size)
    bad(path, str("end-of-document id ", s.eod_id, " is outside the vocabulary of ", s.vocab_size));
  s.num_tokens = get_le<uint64_t>(b + 24);
  s.num_documents = get_le<uint64_t>(b + 32);
  s.payload_fnv1a64 = get_le<uint64_t>(b + 40);
  const char* name = reinterpret_cast<const char*>(b + 48);
  const size_t len = strnlen(name, kShardTokenizerBytes);
  if (len == kShardTokenizerBytes) bad(path, "the tokenizer name field is not NUL-terminated");
  s.tokenizer.assign(name, len);
  return s;
}

bool is_token_shard(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  char m[8];
  const bool ok =
      ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::pread(fd, m, 8, 0) == 8 && std::memcmp(m, kShardMagic, 8) == 0;
  ::close(fd);
  return ok;
}

// ---- writer ----

TokenShardWriter::TokenShardWriter(std::string path, std::string tokenizer, uint32_t vocab_size, uint32_t eod_id)
    : path_(std::move(path)), hash_(fnv1a64(nullptr, 0)) {
  info_.dtype_bytes = shard_dtype_for_vocab(vocab_size);
  info_.vocab_size = vocab_size;
  info_.eod_id = eod_id;
  info_.tokenizer = std::move(tokenizer);
  MT_CHECK(vocab_size > 0 && (eod_id == kShardNoEod || eod_id < vocab_size), ErrorKind::Internal,
           "TokenShardWriter: vocabulary ", vocab_size, ", eod ", eod_id);
  encode_shard_header(info_);  // checks the tokenizer name before any file is created
  tmp_ = path_ + ".tmp-XXXXXX";
  fd_ = ::mkstemp(tmp_.data());
  if (fd_ < 0) throw Error(ErrorKind::Io, str(path_, ": cannot create a temporary file: ", std::strerror(errno)));
  ::fchmod(fd_, 0644);
  buf_.reserve(1 << 20);
  const std::vector<uint8_t> zero(kShardHeaderBytes, 0);  // the real header goes in at finish()
  try {
    write_all(fd_, zero.data(), zero.size(), path_);
  } catch (...) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    throw;
  }
}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void TokenShardWriter::flush() {
  if (buf_.empty()) return;
  hash_ = fnv1a64(buf_.data(), buf_.size(), hash_);
  write_all(fd_, buf_.data(), buf_.size(), path_);
  buf_.clear();
}

inline void TokenShardWriter::put(uint32_t id) {
  if (id >= info_.vocab_size)
    throw Error(ErrorKind::Data, str(path_, ": token id ", id, " at token offset ", info_.num_tokens,
                                     " is outside the vocabulary of ", info_.vocab_size));
  uint8_t le[4];
  std::memcpy(le, &id, 4);
  buf_.insert(buf_.end(), le, le + info_.dtype_bytes);
  ++info_.num_tokens;
  if (buf_.size() >= (1u << 20)) flush();
}

void TokenShardWriter::append(const int32_t* ids, size_t n) {
  MT_CHECK(fd_ >= 0, ErrorKind::Internal, "TokenShardWriter: append after finish");
  for (size_t i = 0; i < n; ++i) put(static_cast<uint32_t>(ids[i]));
}

void TokenShardWriter::append(const uint8_t* ids, size_t n) {
  MT_CHECK(fd_ >= 0, ErrorKind::Internal, "TokenShardWriter: append after finish");
  if (info_.dtype_bytes == 1 && info_.vocab_size == 256) {  // the byte tokenizer: straight copy
    for (size_t done = 0; done < n;) {
      const size_t k = std::min(n - done, (size_t{1} << 20) - buf_.size());
      buf_.insert(buf_.end(), ids + done, ids + done + k);
      done += k;
      info_.num_tokens += k;
      if (buf_.size() >= (1u << 20)) flush();
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) put(ids[i]);
}

void TokenShardWriter::end_document() {
  if (info_.eod_id != kShardNoEod) put(info_.eod_id);
  ++info_.num_documents;
}

void TokenShardWriter::finish(const std::string& final_path) {
  MT_CHECK(fd_ >= 0, ErrorKind::Internal, "TokenShardWriter: finish called twice");
  const std::string dest = final_path.empty() ? path_ : final_path;
  flush();
  info_.payload_fnv1a64 = hash_;
  const std::vector<uint8_t> h = encode_shard_header(info_);
  auto fail = [&](const std::string& what, int err) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    throw Error(ErrorKind::Io, str(dest, ": ", what, ": ", std::strerror(err)));
  };
  if (::pwrite(fd_, h.data(), h.size(), 0) != static_cast<ssize_t>(h.size())) fail("writing the header failed", errno);
  int rc;
  do rc = ::fsync(fd_);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) fail("fsync failed", errno);
  if (::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    ::unlink(tmp_.c_str());
    throw Error(ErrorKind::Io, str(dest, ": close failed: ", std::strerror(err)));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), dest.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(ErrorKind::Io, str(dest, ": rename of the temporary file failed: ", std::strerror(err)));
  }
  fsync_dir(dir_of(dest));
}

// ---- reader ----

TokenShard::TokenShard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad(path, str("cannot open: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    bad(path, str("cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    bad(path, "not a regular file");
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ > 0) {
    map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map_ == MAP_FAILED) {
      const int err = errno;
      map_ = nullptr;
      ::close(fd);
      bad(path, str("mmap failed: ", std::strerror(err)));
    }
  }
  ::close(fd);  // the mapping stays valid
  try {
    const uint8_t* b = static_cast<const uint8_t*>(map_);
    info_ = decode_shard_header(b, map_size_, path);
    const uint64_t have = map_size_ - kShardHeaderBytes;
    const uint64_t d = info_.dtype_bytes;
    if (info_.num_tokens > have / d || have != info_.num_tokens * d) {
      const bool overflow = info_.num_tokens > UINT64_MAX / d;
      const std::string expected = overflow ? str("more than ", UINT64_MAX) : str(info_.num_tokens * d);
      if (overflow || have < info_.num_tokens * d)
        bad(path, str("truncated payload: expected ", expected, " bytes (", info_.num_tokens, " tokens of ",
                      shard_dtype_name(info_.dtype_bytes), "), found ", have));
      bad(path, str("payload size mismatch: expected ", expected, " bytes (", info_.num_tokens, " tokens of ",
                    shard_dtype_name(info_.dtype_bytes), "), found ", have, " (", have - info_.num_tokens * d,
                    " bytes after the last token)"));
    }
    payload_ = b + kShardHeaderBytes;
    const uint64_t h = fnv1a64(payload_, static_cast<size_t>(have));
    if (h != info_.payload_fnv1a64)
      bad(path, str("payload checksum mismatch (stored ", hex64(info_.payload_fnv1a64), ", computed ", hex64(h),
                    "): the token data is corrupt"));
    if (!(d == 1 && info_.vocab_size == 256)) {
      for (uint64_t i = 0; i < info_.num_tokens; ++i) {
        const int64_t t = token(static_cast<int64_t>(i));
        if (t >= info_.vocab_size)
          bad(path, str("token id ", t, " at token offset ", i, " (byte offset ", kShardHeaderBytes + i * d,
                        ") is outside the vocabulary of ", info_.vocab_size));
      }
    }
  } catch (...) {
    if (map_) ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_size_);
}

int64_t TokenShard::token(int64_t i) const {
  const uint8_t* p = payload_ + static_cast<size_t>(i) * info_.dtype_bytes;
  switch (info_.dtype_bytes) {
    case 1: return *p;
    case 2: return get_le<uint16_t>(p);
    default: return get_le<uint32_t>(p);
  }
}

void TokenShard::read(int64_t start, int64_t n, int64_t* out) const {
  const uint8_t* p = payload_ + static_cast<size_t>(start) * info_.dtype_bytes;
  switch (info_.dtype_bytes) {
    case 1:
      for (int64_t i = 0; i < n; ++i) out[i] = p[i];
      break;
    case 2:
      for (int64_t i = 0; i < n; ++i) out[i] = get_le<uint16_t>(p + 2 * i);
      break;
    default:
      for (int64_t i = 0; i < n; ++i) out[i] = get_le<uint32_t>(p + 4 * i);
      break;
  }
}

// ---- shard sets ----

std::vector<std::string> shard_set_paths(const std::string& path) {
  if (is_token_shard(path)) return {path};
  MT_CHECK(!is_gzip_file(path) || peek_content(path, 8) != std::string(kShardMagic, 8), ErrorKind::Data,
           "token shard '", path,
           "': gzip-compressed; training memory-maps shards, so decompress it first (gunzip) and give the .bin");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    // A .bin that is not a shard (a corrupt header, another program's file) must not be read as text.
    MT_CHECK(!(path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0 && S_ISREG(st.st_mode)),
             ErrorKind::Data, "token shard '", path, "': not a mamba-train token shard (its first 8 bytes are not '",
             std::string(kShardMagic, 8),
             "'); make shards with `mamba-train prepare`, or give a text corpus another "
             "extension than .bin");
    return {};
  }
  std::vector<std::string> out;
  for (int i = 0;; ++i) {
    char b[24];
    std::snprintf(b, sizeof b, ".%03d.bin", i);
    const std::string p = path + b;
    if (::stat(p.c_str(), &st) != 0) break;
    out.push_back(p);
  }
  return out;
}

TokenShardSet::TokenShardSet(const std::vector<std::string>& paths) {
  MT_CHECK(!paths.empty(), ErrorKind::Internal, "TokenShardSet: no shards");
  uint64_t hash = fnv1a64(nullptr, 0);
  for (const std::string& p : paths) {
    shards_.push_back(std::make_unique<TokenShard>(p));
    const ShardInfo& s = shards_.back()->info();
    if (shards_.size() == 1) {
      info_ = s;
      info_.num_tokens = info_.num_documents = 0;
    } else if (s.tokenizer != info_.tokenizer || s.vocab_size != info_.vocab_size || s.eod_id != info_.eod_id ||
               s.dtype_bytes != info_.dtype_bytes) {
      bad(p, str("does not belong with '", paths[0], "' (tokenizer ", s.tokenizer, ", vocabulary ", s.vocab_size, ", ",
                 shard_dtype_name(s.dtype_bytes), " vs tokenizer ", info_.tokenizer, ", vocabulary ", info_.vocab_size,
                 ", ", shard_dtype_name(info_.dtype_bytes), ")"));
    }
    starts_.push_back(static_cast<int64_t>(info_.num_tokens));
    info_.num_tokens += s.num_tokens;
    info_.num_documents += s.num_documents;
    if (paths.size() > 1) hash = fnv1a64(shards_.back()->payload(), shards_.back()->payload_bytes(), hash);
  }
  info_.payload_fnv1a64 = paths.size() > 1 ? hash : shards_[0]->info().payload_fnv1a64;
}

void TokenShardSet::read(int64_t start, int64_t n, int64_t* out) const {
  size_t k = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin()) - 1;
  while (n > 0) {
    const int64_t off = start - starts_[k], take = std::min(n, shards_[k]->size() - off);
    shards_[k]->read(off, take, out);
    start += take;
    out += take;
    n -= take;
    ++k;
  }
}

}  // namespace mt::data
