#include "data/gz_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <zlib.h>

#include "core/error.h"

namespace mt::data {

namespace {

constexpr unsigned char kGzMagic0 = 0x1f, kGzMagic1 = 0x8b;
constexpr size_t kChunk = size_t{1} << 16;

// "<what>: <path>" (or just the path): the front of every message.
std::string where(const std::string& path, const std::string& what) { return what.empty() ? path : what + ": " + path; }

class File {
 public:
  File(const std::string& path, const std::string& what) : path_(path), what_(what) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MT_CHECK(fd_ >= 0, ErrorKind::Data, where(path, what), ": cannot open: ", std::strerror(errno));
    struct stat st;
    MT_CHECK(::fstat(fd_, &st) == 0, ErrorKind::Data, where(path, what), ": cannot stat: ", std::strerror(errno));
    MT_CHECK(!S_ISDIR(st.st_mode), ErrorKind::Data, where(path, what), ": is a directory, not a file");
    size_ = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  }
  ~File() { ::close(fd_); }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Up to n bytes; 0 at the end of the file.
  size_t read(void* buf, size_t n) {
    for (;;) {
      const ssize_t got = ::read(fd_, buf, n);
      if (got >= 0) {
        offset_ += static_cast<uint64_t>(got);
        return static_cast<size_t>(got);
      }
      MT_CHECK(errno == EINTR, ErrorKind::Data, where(path_, what_), ": cannot read: ", std::strerror(errno));
    }
  }
  uint64_t size() const { return size_; }      // 0 for pipes and devices
  uint64_t offset() const { return offset_; }  // bytes read so far

 private:
  std::string path_, what_;
  int fd_ = -1;
  uint64_t size_ = 0, offset_ = 0;
};

struct Inflater {
  z_stream s{};
  Inflater() {
    // 16 + MAX_WBITS: a gzip wrapper (header, CRC-32 and length trailer checked by zlib), nothing else.
    MT_CHECK(inflateInit2(&s, 16 + MAX_WBITS) == Z_OK, ErrorKind::OutOfMemory, "zlib: cannot start a decompressor");
  }
  ~Inflater() { inflateEnd(&s); }
};

// The gzip members of `f` (its first bytes already read into `in`, `have` of them), decompressed into sink.
void inflate_members(File& f, const std::string& path, const std::string& what, std::vector<unsigned char>& in,
                     size_t have, const std::function<void(const char*, size_t)>& sink) {
  Inflater z;
  std::vector<unsigned char> out(kChunk);
  z.s.next_in = in.data();
  z.s.avail_in = static_cast<uInt>(have);
  bool in_member = true;  // inside a member (its end not reached yet)
  bool out_full = false;  // the last inflate filled `out`: it may hold more output without more input
  // The compressed byte the decompressor has reached, for messages.
  auto at = [&] {
    return str("(at compressed byte ", f.offset() - z.s.avail_in, f.size() ? str(" of ", f.size()) : std::string(),
               ")");
  };
  for (;;) {
    if (z.s.avail_in == 0 && !out_full) {
      const size_t n = f.read(in.data(), in.size());
      if (n == 0) break;
      z.s.next_in = in.data();
      z.s.avail_in = static_cast<uInt>(n);
    }
    if (!in_member && z.s.avail_in > 0) {
      // Between members: another one must start here (concatenated gzip files are one stream). Its magic may straddle
      // two reads.
      if (z.s.avail_in == 1) {
        const unsigned char first = z.s.next_in[0];
        const size_t n = f.read(in.data() + 1, in.size() - 1);
        in[0] = first;
        z.s.next_in = in.data();
        z.s.avail_in = static_cast<uInt>(1 + n);
      }
      MT_CHECK(z.s.avail_in >= 2 && z.s.next_in[0] == kGzMagic0 && z.s.next_in[1] == kGzMagic1, ErrorKind::Data,
               where(path, what), ": ", f.offset() - z.s.avail_in,
               " bytes of gzip data are followed by bytes that are not gzip data (a damaged or wrongly joined file)");
      MT_CHECK(inflateReset(&z.s) == Z_OK, ErrorKind::Internal, "zlib: inflateReset failed");
      in_member = true;
    }
    z.s.next_out = out.data();
    z.s.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&z.s, Z_NO_FLUSH);
    const size_t produced = out.size() - z.s.avail_out;
    out_full = rc != Z_STREAM_END && z.s.avail_out == 0;
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
      throw Error(ErrorKind::Data,
                  str(where(path, what), ": corrupt gzip data: ", z.s.msg ? z.s.msg : "invalid data", " ", at()));
    MT_CHECK(rc != Z_MEM_ERROR, ErrorKind::OutOfMemory, where(path, what), ": out of memory while decompressing");
    MT_CHECK(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR, ErrorKind::Internal, where(path, what),
             ": zlib inflate failed (", rc, ")");
    if (produced > 0) sink(reinterpret_cast<const char*>(out.data()), produced);
    if (rc == Z_STREAM_END) in_member = false;
  }
  MT_CHECK(!in_member, ErrorKind::Data, where(path, what), ": truncated gzip data: the file ends at byte ", f.offset(),
           ", before its gzip stream does (cut short by an interrupted download or copy?)");
}

}  // namespace

bool is_gzip_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char m[2];
  const bool gz = ::pread(fd, m, 2, 0) == 2 && m[0] == kGzMagic0 && m[1] == kGzMagic1;
  ::close(fd);
  return gz;
}

void read_chunks(const std::string& path, const std::string& what,
                 const std::function<void(const char* chunk, size_t n)>& sink) {
  File f(path, what);
  std::vector<unsigned char> buf(kChunk);
  // The first two bytes decide; a short read (a pipe) is topped up.
  size_t have = 0;
  for (size_t n; have < 2 && (n = f.read(buf.data() + have, buf.size() - have)) > 0;) have += n;
  if (have >= 2 && buf[0] == kGzMagic0 && buf[1] == kGzMagic1) return inflate_members(f, path, what, buf, have, sink);
  while (have > 0) {
    sink(reinterpret_cast<const char*>(buf.data()), have);
    have = f.read(buf.data(), buf.size());
  }
}

std::string read_content(const std::string& path, const std::string& what) {
  std::string out;
  struct stat st;
  if (!is_gzip_file(path) && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode))
    out.reserve(static_cast<size_t>(st.st_size));  // a plain file: its size, so that no growth doubles the memory
  read_chunks(path, what, [&](const char* c, size_t n) { out.append(c, n); });
  return out;
}

std::string peek_content(const std::string& path, size_t n) {
  std::string out;
  struct Enough {};
  try {
    read_chunks(path, "", [&](const char* c, size_t k) {
      out.append(c, std::min(k, n - out.size()));
      if (out.size() >= n) throw Enough{};
    });
  } catch (const Enough&) {
  } catch (const Error&) {
  }
  return out;
}

}  // namespace mt::data
