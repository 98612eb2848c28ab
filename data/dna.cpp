#include "data/dna.h"

#include <algorithm>

namespace mt::data {

int32_t dna_token(char c) {
  switch (c) {
    case 'A': case 'a': return kDnaA;
    case 'C': case 'c': return kDnaC;
    case 'G': case 'g': return kDnaG;
    case 'T': case 't': return kDnaT;
    case 'N': case 'n':
    case 'R': case 'r': case 'Y': case 'y': case 'S': case 's': case 'W': case 'w': case 'K': case 'k':
    case 'M': case 'm': case 'B': case 'b': case 'D': case 'd': case 'H': case 'h': case 'V': case 'v':
      return kDnaN;
    default: return -1;
  }
}

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
