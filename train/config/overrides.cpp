#include "train/config/overrides.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>

#include "core/error.h"

namespace mt::train {

namespace {
int64_t parse_int(const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  MT_CHECK(!v.empty() && *end == '\0' && errno == 0, ErrorKind::Usage, "--set ", key, "=", v, ": expected an integer");
  return x;
}
double parse_double(const std::string& key, const std::string& v) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  MT_CHECK(!v.empty() && *end == '\0' && std::isfinite(x), ErrorKind::Usage, "--set ", key, "=", v,
           ": expected a finite number");
  return x;
}
bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  throw Error(ErrorKind::Usage, str("--set ", key, "=", v, ": expected true or false"));
}
}  // namespace

void apply_config_overrides(MambaConfig& c, const std::vector<std::string>& sets) {
  using Setter = std::function<void(const std::string&, const std::string&)>;
  const std::map<std::string, Setter> fields = {
      {"d_model", [&](auto& k, auto& v) { c.d_model = parse_int(k, v); }},
      {"n_layer", [&](auto& k, auto& v) { c.n_layer = parse_int(k, v); }},
      {"vocab_size", [&](auto& k, auto& v) { c.vocab_size = parse_int(k, v); }},
      {"d_state", [&](auto& k, auto& v) { c.d_state = parse_int(k, v); }},
      {"d_conv", [&](auto& k, auto& v) { c.d_conv = parse_int(k, v); }},
      {"expand", [&](auto& k, auto& v) { c.expand = parse_int(k, v); }},
      {"d_inner", [&](auto& k, auto& v) { c.d_inner = parse_int(k, v); }},
      {"dt_rank", [&](auto& k, auto& v) { c.dt_rank = parse_int(k, v); }},
      {"dt_min", [&](auto& k, auto& v) { c.dt_min = parse_double(k, v); }},
      {"dt_max", [&](auto& k, auto& v) { c.dt_max = parse_double(k, v); }},
      {"dt_init_floor", [&](auto& k, auto& v) { c.dt_init_floor = parse_double(k, v); }},
      {"dt_scale", [&](auto& k, auto& v) { c.dt_scale = parse_double(k, v); }},
      {"norm_eps", [&](auto& k, auto& v) { c.norm_eps = parse_double(k, v); }},
      {"conv_bias", [&](auto& k, auto& v) { c.conv_bias = parse_bool(k, v); }},
      {"proj_bias", [&](auto& k, auto& v) { c.proj_bias = parse_bool(k, v); }},
      {"tie_embeddings", [&](auto& k, auto& v) { c.tie_embeddings = parse_bool(k, v); }},
      {"bidirectional", [&](auto& k, auto& v) { c.bidirectional = parse_bool(k, v); }},
      {"norm",
       [&](auto& k, auto& v) {
         MT_CHECK(parse_norm_kind(v, &c.norm), ErrorKind::Usage, "--set ", k, "=", v,
                  ": expected rmsnorm or layernorm");
       }},
  };
  for (const std::string& s : sets) {
    auto eq = s.find('=');
    MT_CHECK(eq != std::string::npos && eq > 0, ErrorKind::Usage, "--set ", s, ": expected field=value");
    const std::string key = s.substr(0, eq), value = s.substr(eq + 1);
    auto it = fields.find(key);
    if (it == fields.end()) {
      std::string names;
      for (auto& kv : fields) names += (names.empty() ? "" : ", ") + kv.first;
      throw Error(ErrorKind::Usage, str("--set ", s, ": unknown model field '", key, "' (known: ", names, ")"));
    }
    it->second(key, value);
  }
  // Derived sizes follow d_model / expand unless explicitly overridden.
}

std::string group_thousands(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

}  // namespace mt::train
