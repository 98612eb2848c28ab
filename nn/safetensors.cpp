// safetensors reader / writer; see nn/safetensors.h for the format and the guarantees.
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

// The file format is little-endian and we copy bytes straight into tensors.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host"
#endif

namespace mt {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // same limit as the reference implementation
constexpr int kMaxRank = 32;                                // beyond this a shape is certainly corrupt
constexpr uint64_t kMaxNumel = 1ull << 56;                  // 64 PiB of bf16: anything larger is corrupt

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void bad_file(const std::string& path, const std::string& what) {
  throw_error(ErrorKind::Checkpoint, str("safetensors file '", path, "': ", what));
}
[[noreturn]] void bad_tensor(const std::string& path, const std::string& name, const std::string& what) {
  throw_error(ErrorKind::Checkpoint, str("safetensors file '", path, "', tensor '", name, "': ", what));
}
[[noreturn]] void io_error(const std::string& path, const std::string& what, int err) {
  throw_error(ErrorKind::Io, str("cannot write '", path, "': ", what, ": ", errno_text(err)));
}

// File descriptor that closes itself.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

bool st_dtype_from_name(const std::string& n, DType* out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16},
                                                        {"F16", DType::F16}, {"I32", DType::I32}, {"I64", DType::I64}};
  for (const auto& e : table) {
    if (n == e.first) {
      *out = e.second;
      return true;
    }
  }
  return false;
}

// Read exactly n bytes at offset off; false if the file ends first.
bool pread_all(int fd, void* buf, size_t n, uint64_t off, const std::string& path) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    size_t chunk = std::min<size_t>(n, size_t(1) << 30);
    ssize_t r = ::pread(fd, p, chunk, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      bad_file(path, str("read failed at byte ", off, ": ", errno_text(errno)));
    }
    if (r == 0) return false;
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
  return true;
}

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // relative to the start of the data section
};

struct Header {
  uint64_t data_start = 0;  // 8 + N
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

// A JSON value that is a non-negative integer (JSON integers only: 3.0 is not accepted).
bool as_uint(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  Entry e;
  e.name = name;
  if (!v.is_object()) bad_tensor(path, name, str("entry must be a JSON object, found ", v.type_name()));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) bad_tensor(path, name, str("entry has no \"", key, "\""));
  }
  const json& dt = v.at("dtype");
  if (!dt.is_string()) bad_tensor(path, name, str("\"dtype\" must be a string, found ", dt.type_name()));
  const std::string dts = dt.get<std::string>();
  if (!st_dtype_from_name(dts, &e.dtype)) {
    bad_tensor(path, name, str("unsupported dtype '", dts, "' (supported: F32, F64, BF16, F16, I32, I64)"));
  }

  const json& sh = v.at("shape");
  if (!sh.is_array()) bad_tensor(path, name, str("\"shape\" must be an array, found ", sh.type_name()));
  if (sh.size() > static_cast<size_t>(kMaxRank)) {
    bad_tensor(path, name, str("shape has ", sh.size(), " dimensions (at most ", kMaxRank, " supported)"));
  }
  uint64_t numel = 1;
  for (size_t i = 0; i < sh.size(); ++i) {
    uint64_t d = 0;
    if (!as_uint(sh[i], &d)) {
      bad_tensor(path, name, str("shape[", i, "] must be a non-negative integer, found ", sh[i].dump()));
    }
    if (d > kMaxNumel || (d != 0 && numel > kMaxNumel / d)) {
      bad_tensor(path, name, str("absurd shape ", sh.dump(), " (more than 2^56 elements)"));
    }
    numel *= d;
    e.shape.push_back(static_cast<int64_t>(d));
  }

  const json& off = v.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !as_uint(off[0], &e.begin) || !as_uint(off[1], &e.end)) {
    bad_tensor(path, name, str("\"data_offsets\" must be [begin, end] with non-negative integers, found ", off.dump()));
  }
  if (e.begin > e.end) bad_tensor(path, name, str("data_offsets [", e.begin, ", ", e.end, "] has begin > end"));
  const uint64_t want = numel * dtype_size(e.dtype);
  if (e.end - e.begin != want) {
    bad_tensor(path, name,
               str("data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin, " bytes but ", dts,
                   shape_str(e.shape), " needs ", want));
  }
  if (e.end > data_size) {
    bad_tensor(path, name,
               str("data_offsets [", e.begin, ", ", e.end, "] run past the end of the file (the data ", "section has ",
                   data_size, " bytes)"));
  }
  return e;
}

// Read and validate the header of an open file.
Header read_header(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) bad_file(path, str("cannot stat: ", errno_text(errno)));
  if (!S_ISREG(st.st_mode)) bad_file(path, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) bad_file(path, str("file has ", file_size, " bytes, shorter than the 8-byte header length"));

  unsigned char lenbuf[8];
  if (!pread_all(fd, lenbuf, 8, 0, path)) bad_file(path, "file ended inside the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | lenbuf[i];
  if (n > kMaxHeaderBytes) {
    bad_file(path, str("header length ", n, " exceeds the 100 MB limit (corrupt or not a safetensors file)"));
  }
  if (n > file_size - 8) {
    bad_file(path, str("header length ", n, " is larger than the rest of the file (", file_size - 8, " bytes)"));
  }

  std::string text(static_cast<size_t>(n), '\0');
  if (n > 0 && !pread_all(fd, &text[0], static_cast<size_t>(n), 8, path))
    bad_file(path, "file ended inside the header");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& ex) {
    bad_file(path, str("header is not valid JSON: ", ex.what()));
  }
  if (!j.is_object()) bad_file(path, str("header must be a JSON object, found ", j.type_name()));

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) {
        bad_file(path, str("\"__metadata__\" must be an object of strings, found ", it.value().type_name()));
      }
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          bad_file(path,
                   str("\"__metadata__\" value for '", m.key(), "' must be a string, found ", m.value().type_name()));
        }
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, it.key(), it.value(), data_size));
  }

  // No two tensors may share bytes (empty tensors occupy none).
  std::vector<const Entry*> order;
  for (const Entry& e : h.entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->begin < order[i - 1]->end) {
      bad_tensor(path, order[i]->name,
                 str("bytes [", order[i]->begin, ", ", order[i]->end, ") overlap tensor '", order[i - 1]->name,
                     "' at [", order[i - 1]->begin, ", ", order[i - 1]->end, ")"));
    }
  }
  return h;
}

int open_for_read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad_file(path, str("cannot open: ", errno_text(errno)));
  return fd;
}

// ---- writing ----

void write_all(int fd, const void* buf, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    size_t chunk = std::min<size_t>(n, size_t(1) << 30);
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      io_error(path, "write failed", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// A temporary file next to the target; removed on destruction unless committed (renamed).
struct TempFile {
  std::string name;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed && !name.empty()) ::unlink(name.c_str());
  }
};

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  Fd fd(open_for_read(path));
  Header h = read_header(fd.fd, path);
  std::map<std::string, Tensor> out;
  for (const Entry& e : h.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
    const size_t bytes = static_cast<size_t>(e.end - e.begin);
    if (bytes > 0 && !pread_all(fd.fd, t.data_ptr(), bytes, h.data_start + e.begin, path)) {
      bad_tensor(path, e.name, "file ended inside the tensor's data (was it truncated while being read?)");
    }
    out.emplace(e.name, t);
  }
  return out;
}

std::map<std::string, std::string> safetensors_metadata(const std::string& path) {
  Fd fd(open_for_read(path));
  return read_header(fd.fd, path).metadata;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Packed CPU copies, in the (sorted) order of the map; offsets follow one another without gaps.
  std::vector<std::pair<std::string, Tensor>> packed;
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& kv : tensors) {
    MT_CHECK_SHAPE(!kv.first.empty(), "save_safetensors('", path, "'): empty tensor name");
    MT_CHECK_SHAPE(kv.first != "__metadata__", "save_safetensors('", path,
                   "'): '__metadata__' is reserved and cannot name a tensor");
    MT_CHECK_SHAPE(kv.second.defined(), "save_safetensors('", path, "'): tensor '", kv.first, "' is undefined");
    Tensor c = kv.second.to(Device::cpu()).contiguous();
    const uint64_t bytes = c.nbytes();
    header[kv.first] = {
        {"dtype", st_dtype_name(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    packed.emplace_back(kv.first, c);
  }
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& kv : metadata) m[kv.first] = kv.second;
    header["__metadata__"] = m;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // data starts 8-byte aligned (8 + N is a multiple of 8)
  unsigned char lenbuf[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) lenbuf[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

  const std::string dir = parent_dir(path);
  TempFile tmp;
  {
    std::string templ = path + ".tmp.XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    int fd = ::mkstemp(buf.data());
    if (fd < 0) io_error(path, str("cannot create a temporary file in '", dir, "'"), errno);
    tmp.fd = fd;
    tmp.name = buf.data();
  }
  // mkstemp creates the file 0600; a weights file is ordinarily world-readable.
  if (::fchmod(tmp.fd, 0644) != 0) io_error(path, "fchmod of the temporary file failed", errno);

  write_all(tmp.fd, lenbuf, 8, path);
  write_all(tmp.fd, text.data(), text.size(), path);
  for (const auto& kv : packed) {
    if (kv.second.nbytes() > 0) write_all(tmp.fd, kv.second.data_ptr(), kv.second.nbytes(), path);
  }
  if (::fsync(tmp.fd) != 0) io_error(path, "fsync failed", errno);
  int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) io_error(path, "close failed", errno);
  if (::rename(tmp.name.c_str(), path.c_str()) != 0) {
    io_error(path, str("cannot rename the temporary file '", tmp.name, "' over it"), errno);
  }
  tmp.committed = true;
  // Make the rename itself durable.
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.fd < 0) io_error(path, str("cannot open the directory '", dir, "' to fsync it"), errno);
  if (::fsync(dfd.fd) != 0 && errno != EINVAL) io_error(path, str("fsync of directory '", dir, "' failed"), errno);
}

}  // namespace mt
