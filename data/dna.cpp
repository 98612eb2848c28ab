#include "data/dna.h"

#include <algorithm>

#include "core/error.h"
#include "data/gz_reader.h"

namespace mt::data {

int32_t dna_token(char c) {
  switch (c) {
    case 'A':
    case 'a': return kDnaA;
    case 'C':
    case 'c': return kDnaC;
    case 'G':
    case 'g': return kDnaG;
    case 'T':
    case 't': return kDnaT;
    case 'N':
    case 'n':
    case 'R':
    case 'r':
    case 'Y':
    case 'y':
    case 'S':
    case 's':
    case 'W':
    case 'w':
    case 'K':
    case 'k':
    case 'M':
    case 'm':
    case 'B':
    case 'b':
    case 'D':
    case 'd':
    case 'H':
    case 'h':
    case 'V':
    case 'v': return kDnaN;
    default: return -1;
  }
}

char dna_letter(int64_t id) { return id >= kDnaA && id <= kDnaN ? "ACGTN"[id - kDnaA] : '\0'; }

int64_t encode_dna(const std::string& seq, std::vector<int32_t>& out) {
  const size_t start = out.size();
  out.reserve(start + seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    const int32_t t = dna_token(seq[i]);
    if (t < 0) {
      out.resize(start);
      return static_cast<int64_t>(i);
    }
    out.push_back(t);
  }
  return -1;
}

void read_fasta_dna(const std::string& path, const std::string& what,
                    const std::function<void(const uint8_t* ids, size_t n)>& on_tokens,
                    const std::function<void()>& on_record_end) {
  std::vector<uint8_t> buf;
  buf.reserve(1 << 16);
  int64_t ln = 1, col = 0;
  bool header = false, any_record = false, at_line_start = true, record_has_bases = false;
  auto flush = [&] {
    if (!buf.empty()) on_tokens(buf.data(), buf.size());
    buf.clear();
  };
  auto end_record = [&] {
    flush();
    if (record_has_bases) on_record_end();
    record_has_bases = false;
  };
  read_chunks(path, what, [&](const char* chunk, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const char c = chunk[i];
      if (c == '\n') {
        ++ln;
        col = 0;
        header = false;
        at_line_start = true;
        continue;
      }
      ++col;
      if (header || c == '\r') continue;
      if (at_line_start && c == '>') {
        end_record();
        header = any_record = true;
        at_line_start = false;
        continue;
      }
      at_line_start = false;
      const int32_t t = dna_token(c);
      if (t < 0) {
        throw Error(ErrorKind::Data,
                    str(what, ": ", path, ":", ln, ":", col, ": '",
                        (c >= 32 && c < 127) ? std::string(1, c) : str("\\x", std::hex, (int)(unsigned char)c),
                        "' is not a DNA letter (A C G T, N or an IUPAC ambiguity code)",
                        any_record ? "" : "; a FASTA file starts with a '>' header line"));
      }
      if (!any_record)
        throw Error(ErrorKind::Data, str(what, ": ", path, ":", ln, ": sequence before the first '>' header line"));
      buf.push_back(static_cast<uint8_t>(t));
      record_has_bases = true;
      if (buf.size() == buf.capacity()) flush();
    }
  });
  end_record();
}

void reverse_complement(int32_t* ids, int64_t n) {
  std::reverse(ids, ids + n);
  for (int64_t i = 0; i < n; ++i) {
    switch (ids[i]) {
      case kDnaA: ids[i] = kDnaT; break;
      case kDnaT: ids[i] = kDnaA; break;
      case kDnaC: ids[i] = kDnaG; break;
      case kDnaG: ids[i] = kDnaC; break;
      default: break;
    }
  }
}

}  // namespace mt::data
