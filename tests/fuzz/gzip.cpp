// libFuzzer target: the gzip / plain reader every data file goes through (data/gz_reader.h). The input is the file.
// Damaged gzip data of any kind must be an mt::Error(Data) naming the file, never a crash, a hang or a read of
// memory zlib did not write; what it returns must equal zlib's own one-shot decompression when that succeeds.
#include <unistd.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/gz_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* dir = std::getenv("TMPDIR");
  const std::string p = std::string(dir ? dir : "/tmp") + "/fuzz_gzip_" + std::to_string(::getpid());
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  std::string got;
  bool ok = true;
  try {
    got = mt::data::read_content(p, "fuzz");
  } catch (const mt::Error& e) {
    ok = false;
    if (e.kind() != mt::ErrorKind::Data || std::string(e.what()).find(p) == std::string::npos) std::abort();
  }
  std::remove(p.c_str());
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (ok && !gz && got != std::string(reinterpret_cast<const char*>(data), size)) std::abort();  // plain: as is
  if (ok && gz && size < (1u << 16)) {
    // A single well-formed member that zlib's uncompress-like inflate accepts must give the same bytes.
    z_stream s{};
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return 0;
    std::string out(got.size() + 1, '\0');
    s.next_in = const_cast<Bytef*>(data);
    s.avail_in = static_cast<uInt>(size);
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&s, Z_FINISH);
    if (rc == Z_STREAM_END && s.avail_in == 0 && out.compare(0, s.total_out, got) != 0) std::abort();
    inflateEnd(&s);
  }
  return 0;
}
