// Number formatting for reports.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace mt::train {

// 129135360 -> "129,135,360".
inline std::string group_thousands(int64_t v) {
  const std::string s = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

// "12.34 GiB".
inline std::string format_gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace mt::train
