#include "data/gz_reader.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <zlib.h>

#include "core/error.h"

namespace mt::data {

void read_chunks(const std::string& path, const std::string& what,
                 const std::function<void(const char* chunk, size_t n)>& sink) {
  gzFile f = gzopen(path.c_str(), "rb");
  MT_CHECK(f != nullptr, ErrorKind::Data, what, ": cannot open '", path, "': ", std::strerror(errno));
  struct Close {
    gzFile f;
    ~Close() { gzclose(f); }
  } close{f};
  gzbuffer(f, 1 << 17);
  std::vector<char> buf(1 << 16);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      throw Error(ErrorKind::Data, str(what, ": '", path, "': cannot read (", msg, ")"));
    }
    if (n == 0) break;
    sink(buf.data(), static_cast<size_t>(n));
  }
}

std::string read_file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in.good(), ErrorKind::Data, path, ": cannot open: ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  MT_CHECK(!in.bad(), ErrorKind::Data, path, ": read error");
  return ss.str();
}

}  // namespace mt::data
