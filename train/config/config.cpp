// The strict YAML training config: strict_yaml.h gives a tree with positions, the schema (config_schema.h) types and
// ranges each key, then cross-key checks and derived defaults. Every error is one line
// "<source>:<line>:<col>: <key.path>: <problem>" ("--set <key.path>: <problem>" for an override).
#include "train/config/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/paths.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "train/config/schema.h"
#include "train/config/strict_yaml.h"
#include "train/init_from.h"

namespace mt::train {
namespace {

using schema::Key;
using schema::Type;
using schema::Value;

constexpr size_t kMaxConfigBytes = 1 << 20;  // configs are a few KB; anything near this is not a config

// Where a value came from: a file position, a --set override, or nowhere (a default).
struct Origin {
  const std::string* source = nullptr;
  int line = 0, col = 0;
  bool from_set = false;
};

std::string where(const Origin& o, const std::string& path) {
  if (o.from_set) return "--set " + path;
  if (o.line > 0) return str(*o.source, ":", o.line, ":", o.col, ": ", path);
  return str(*o.source, ": ", path);
}

[[noreturn]] void config_error(const std::string& msg) { throw Error(ErrorKind::Config, one_line(msg)); }

[[noreturn]] void fail(const Origin& o, const std::string& path, const std::string& problem) {
  config_error(str(where(o, path), ": ", problem));
}

Origin at(const std::string& source, const YamlNode& n) {
  Origin o;
  o.source = &source;
  o.line = n.line;
  o.col = n.col;
  return o;
}

// ---- did you mean ----------------------------------------------------------------------------------------------

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// Nearest valid name to `typed`: a full key path, or a section name when `typed` has no dot. Candidates: the whole
// path against every path and section; the part after the first dot (or the whole word) against every key's last
// part, one edit cheaper inside the same section. A candidate counts when it is within max(1, len/3) edits of the
// string compared. "" when nothing is close.
std::string suggest(const std::string& typed) {
  if (typed.size() > 64) return "";  // garbage: not worth the quadratic distance
  const size_t dot = typed.find('.');
  const std::string sec = dot == std::string::npos ? "" : typed.substr(0, dot);
  const std::string leaf = dot == std::string::npos ? typed : typed.substr(dot + 1);
  auto close = [](size_t d, const std::string& s) { return d <= std::max<size_t>(1, s.size() / 3); };
  std::string best;
  size_t best_d = SIZE_MAX;
  auto consider = [&](const std::string& cand, size_t d, const std::string& compared) {
    if (close(d, compared) && d < best_d) {
      best = cand;
      best_d = d;
    }
  };
  if (dot == std::string::npos) {
    for (const std::string& s : schema::sections()) consider(s, edit_distance(typed, s), typed);
  }
  for (const Key& k : schema::keys()) {
    consider(k.path, edit_distance(typed, k.path), typed);
    const bool same_section = k.section() == sec;
    consider(k.path, edit_distance(leaf, k.leaf()) + (same_section ? 0 : 1), leaf);
  }
  return best;
}

std::string section_keys(const std::string& sec) {
  std::string s;
  for (const Key& k : schema::keys()) {
    if (k.section() == sec) s += (s.empty() ? "" : ", ") + k.leaf();
  }
  return s;
}

std::string unknown_key_problem(const std::string& path) {
  if (path.find('.') == std::string::npos &&
      std::find(schema::sections().begin(), schema::sections().end(), path) != schema::sections().end())
    return str("is a section, not a key: name one of its keys (", section_keys(path), ")");
  const std::string near = suggest(path);
  if (!near.empty()) return str("unknown key; did you mean '", near, "'?");
  const std::string sec = path.substr(0, path.find('.'));
  if (std::find(schema::sections().begin(), schema::sections().end(), sec) != schema::sections().end()) {
    return str("unknown key (keys of ", sec, ": ", section_keys(sec), ")");
  }
  std::string all;
  for (const std::string& s : schema::sections()) all += (all.empty() ? "" : ", ") + s;
  return str("unknown key (sections: ", all, ")");
}

std::string unknown_section_problem(const std::string& name) {
  if (schema::find(name)) {
    return str("unknown section: write dotted keys nested ('", name.substr(0, name.find('.')), ":' then '  ",
               name.substr(name.find('.') + 1), ": ...' on the next line); dotted paths are for --set");
  }
  const std::string near = suggest(name);
  if (!near.empty()) return str("unknown section; did you mean '", near, "'?");
  std::string all;
  for (const std::string& s : schema::sections()) all += (all.empty() ? "" : ", ") + s;
  return str("unknown section (sections: ", all, ")");
}

// ---- scalars ---------------------------------------------------------------------------------------------------

bool is_null_spelling(const std::string& t) {
  return t.empty() || t == "~" || t == "null" || t == "Null" || t == "NULL";
}

bool all_digits(const std::string& s, size_t from, size_t to) {
  if (from >= to) return false;
  for (size_t i = from; i < to; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// [+-]? digits  (plain decimal)
bool is_decimal_integer(const std::string& t) {
  const size_t start = (!t.empty() && (t[0] == '+' || t[0] == '-')) ? 1 : 0;
  return all_digits(t, start, t.size());
}

// [+-]? (digits (. digits?)? | . digits) ([eE] [+-]? digits)?
bool is_decimal_number(const std::string& t) {
  size_t i = (!t.empty() && (t[0] == '+' || t[0] == '-')) ? 1 : 0;
  const size_t int_start = i;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
  bool digits = i > int_start;
  if (i < t.size() && t[i] == '.') {
    const size_t frac = ++i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    digits = digits || i > frac;
  }
  if (!digits) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    return all_digits(t, i, t.size());
  }
  return i == t.size();
}

bool is_nonfinite_spelling(std::string t) {
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) t.erase(0, 1);
  if (!t.empty() && t[0] == '.') t.erase(0, 1);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return t == "nan" || t == "inf" || t == "infinity";
}

std::string quoted_hint(const Key& k, const YamlNode& n) {
  return str(schema::expectation(k), ", got ", describe_yaml_node(n), " (write ",
             k.type == Type::Bool ? "true / false" : "numbers", " without quotes)");
}

// A list of strings: a YAML sequence of scalars, or one scalar holding comma-separated items ("neg,pos", also with
// [brackets]: the form --set gives). Items are trimmed of spaces.
Value parse_list(const Key& k, const YamlNode& n, const Origin& value_at) {
  Value v;
  if (n.kind == YamlNode::Kind::Seq) {
    for (const YamlNode& item : n.items) {
      if (item.kind != YamlNode::Kind::Scalar)
        fail(value_at, k.path, str(schema::expectation(k), ", got an item that is ", describe_yaml_node(item)));
      v.list.push_back(item.value);
    }
  } else if (n.kind == YamlNode::Kind::Scalar) {
    std::string t = n.value;
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') t = t.substr(1, t.size() - 2);
    size_t start = 0;
    for (;;) {
      const size_t comma = t.find(',', start);
      std::string item = t.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      const size_t a = item.find_first_not_of(' '), b = item.find_last_not_of(' ');
      item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
      if (!(item.empty() && comma == std::string::npos && v.list.empty())) v.list.push_back(item);  // "[]" is empty
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else if (n.kind != YamlNode::Kind::Null) {
    fail(value_at, k.path, str(schema::expectation(k), ", got ", describe_yaml_node(n)));
  }
  if (k.check) {
    const std::string problem = k.check(v);
    if (!problem.empty()) fail(value_at, k.path, problem);
  }
  return v;
}

Value parse_value(const Key& k, const YamlNode& n, const Origin& value_at, const Origin& key_at) {
  if (k.type == Type::List) return parse_list(k, n, value_at);
  Value v;
  const schema::Value def = k.get(schema::defaults());
  if (n.kind == YamlNode::Kind::Null) {
    if ((k.type == Type::String || k.type == Type::Enum) && def.s.empty()) return v;  // "" is the default
    fail(key_at, k.path,
         str("has no value (", schema::expectation(k), "; remove the key to use the default ",
             schema::format_yaml(k, def), ")"));
  }
  if (n.kind != YamlNode::Kind::Scalar)
    fail(value_at, k.path, str(schema::expectation(k), ", got ", describe_yaml_node(n)));
  const std::string& t = n.value;
  switch (k.type) {
    case Type::Int: {
      if (n.quoted) fail(value_at, k.path, quoted_hint(k, n));
      if (!is_decimal_integer(t)) fail(value_at, k.path, str("expected an integer, got '", t, "'"));
      const size_t digits = (t[0] == '+' || t[0] == '-') ? 1 : 0;
      if (t.size() - digits > 1 && t[digits] == '0') {
        fail(value_at, k.path,
             str("expected an integer, got '", t, "' (no leading zeros: YAML 1.1 reads them as octal)"));
      }
      const char* first = t.data() + (t[0] == '+' ? 1 : 0);
      auto r = std::from_chars(first, t.data() + t.size(), v.i);
      if (r.ec != std::errc() || r.ptr != t.data() + t.size()) {
        fail(value_at, k.path, str("'", t, "' is out of the range of a 64-bit integer"));
      }
      break;
    }
    case Type::Float: {
      if (n.quoted) fail(value_at, k.path, quoted_hint(k, n));
      if (is_nonfinite_spelling(t)) fail(value_at, k.path, str("must be a finite number, got '", t, "'"));
      if (!is_decimal_number(t)) fail(value_at, k.path, str("expected a number, got '", t, "'"));
      const char* first = t.data() + (t[0] == '+' ? 1 : 0);
      auto r = std::from_chars(first, t.data() + t.size(), v.f);
      if (r.ec != std::errc() || r.ptr != t.data() + t.size() || !std::isfinite(v.f)) {
        fail(value_at, k.path, str("must be a finite number, got '", t, "' (out of the range of a double)"));
      }
      break;
    }
    case Type::Bool: {
      if (n.quoted) fail(value_at, k.path, quoted_hint(k, n));
      if (t == "true" || t == "false") {
        v.b = (t == "true");
        break;
      }
      std::string lower = t;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const char* yaml11[] = {"y", "yes", "n", "no", "on", "off", "true", "false"};
      for (const char* w : yaml11) {
        if (lower == w) {
          fail(value_at, k.path,
               str("expected true or false, got '", t,
                   "' (only lowercase true / false: YAML 1.1 words like yes / no / on / off / y "
                   "are not accepted)"));
        }
      }
      fail(value_at, k.path, str("expected true or false, got '", t, "'"));
    }
    case Type::String: v.s = t; break;
    case Type::List: break;  // parse_list
    case Type::Enum:
      if (std::find(k.choices.begin(), k.choices.end(), t) == k.choices.end()) {
        fail(value_at, k.path, str(schema::expectation(k), ", got '", t, "'"));
      }
      v.s = t;
      break;
  }
  const std::string range = schema::range_problem(k, v);
  if (!range.empty()) fail(value_at, k.path, str(range, ", got ", t));
  if (k.check) {
    const std::string problem = k.check(v);
    if (!problem.empty()) fail(value_at, k.path, problem);
  }
  return v;
}

// ---- assembling the config --------------------------------------------------------------------------------------

// The explicitly given values, by index in schema::keys(), with their origins.
struct Given {
  std::vector<bool> set;
  std::vector<Value> value;
  std::vector<Origin> origin;
  const std::string* source;

  explicit Given(const std::string& src)
      : set(schema::keys().size()), value(schema::keys().size()), origin(schema::keys().size()), source(&src) {}
  size_t index(const Key* k) const {
    MT_ASSERT(k != nullptr, "a config key path missing from the schema");
    return static_cast<size_t>(k - schema::keys().data());
  }
  bool has(const std::string& path) const { return set[index(schema::find(path))]; }
  Origin of(const std::string& path) const {
    const size_t i = index(schema::find(path));
    if (set[i]) return origin[i];
    Origin o;
    o.source = source;
    return o;
  }
  // The key to blame for a conflict between a and b: the one the user wrote (a when both or neither).
  std::string blame(const std::string& a, const std::string& b) const { return has(a) || !has(b) ? a : b; }
};

void read_tree(const YamlNode& root, const std::string& source, Given& g) {
  if (root.kind == YamlNode::Kind::Null) {
    if (root.line == 0) {
      config_error(str(source,
                       ": the config is empty: expected a mapping of sections (run:, model:, "
                       "tokenizer:, data:, optimizer:, ...; see configs/README.md)"));
    }
    config_error(str(source, ":", root.line, ":", root.col,
                     ": expected a mapping of sections at the "
                     "top level (run:, model:, data:, ...), found no value"));
  }
  if (root.kind != YamlNode::Kind::Map) {
    config_error(str(source, ":", root.line, ":", root.col,
                     ": expected a mapping of sections at the "
                     "top level (run:, model:, data:, ...), got ",
                     describe_yaml_node(root)));
  }
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const YamlNode& sk = root.keys[i];
    const YamlNode& sv = root.items[i];
    const std::string& sec = sk.value;
    if (std::find(schema::sections().begin(), schema::sections().end(), sec) == schema::sections().end()) {
      fail(at(source, sk), sec, unknown_section_problem(sec));
    }
    if (sv.kind == YamlNode::Kind::Null) continue;  // "optimizer:" with every key commented out: all defaults
    if (sv.kind != YamlNode::Kind::Map) {
      fail(at(source, sv), sec,
           str("expected a mapping of keys (indented 'key: value' lines), got ", describe_yaml_node(sv)));
    }
    for (size_t j = 0; j < sv.keys.size(); ++j) {
      const YamlNode& kk = sv.keys[j];
      const std::string path = sec + "." + kk.value;
      const Key* k = schema::find(path);
      if (!k) fail(at(source, kk), path, unknown_key_problem(path));
      const size_t idx = g.index(k);
      g.value[idx] = parse_value(*k, sv.items[j], at(source, sv.items[j]), at(source, kk));
      g.origin[idx] = at(source, kk);
      g.set[idx] = true;
    }
  }
}

void read_overrides(const std::vector<std::string>& overrides, Given& g) {
  for (const std::string& s : overrides) {
    Origin o;
    o.source = g.source;
    o.from_set = true;
    const size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      config_error(str("--set ", s, ": expected section.key=value (e.g. --set optimizer.lr=3e-4)"));
    }
    const std::string path = s.substr(0, eq), text = s.substr(eq + 1);
    const Key* k = schema::find(path);
    if (!k) fail(o, path, unknown_key_problem(path));
    YamlNode n;  // the value as an unquoted YAML scalar: the same rules as in the file
    n.kind = is_null_spelling(text) ? YamlNode::Kind::Null : YamlNode::Kind::Scalar;
    n.value = text;
    const size_t idx = g.index(k);
    g.value[idx] = parse_value(*k, n, o, o);
    g.origin[idx] = o;
    g.set[idx] = true;
  }
}

std::string cwd_hint(const std::string& path) {
  if (!path.empty() && path[0] == '/') return "";
  std::error_code ec;
  const auto cwd = std::filesystem::current_path(ec);
  return ec ? "" : str(" (relative to the working directory ", cwd.string(), ")");
}

// The vocabulary of tokenizer.kind (bpe: the largest id of tokenizer.path + 1, read from the file).
int64_t tokenizer_vocab(const TrainConfig& c) {
  if (c.tokenizer.kind == "dna") return 7;
  if (c.tokenizer.kind == "bpe") {
    try {
      return data::BpeTokenizer::load(c.tokenizer.path).vocab_size();
    } catch (const Error& e) {
      throw Error(e.kind(), str("tokenizer.path: ", e.what()));
    }
  }
  return 256;
}

// The ids the model's embedding must hold for LM data: the tokenizer's, and the mask token with trainer.objective mlm.
int64_t model_vocab(const TrainConfig& c) { return tokenizer_vocab(c) + (c.trainer.objective == "mlm" ? 1 : 0); }
// model.init_from: the model's dimensions come from the source. Keys that shape the parameters and were given
// (in the file, by --set, or by model.variant) must equal the source's; the others take the source's values unless
// given. model.bidirectional may differ (a causal source can start a bidirectional model, whose Caduceus reverse
// direction then starts fresh); the layout of the reverse direction (model.bidirectional_weights) is the source's
// when the source is bidirectional, else the config's. The vocabulary is the source's, extended (rounded up to
// pad_vocab_size_multiple) when the data's ids need more rows; a given model.vocab_size may be larger than the
// source's, not smaller.
void apply_init_source(TrainConfig& c, const Given& g) {
  const Origin at = g.of("model.init_from");
  InitSource src;
  try {
    src = inspect_init_source(c.model.init_from);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Config) fail(at, "model.init_from", str(e.what(), cwd_hint(c.model.init_from)));
    throw Error(e.kind(), str(where(at, "model.init_from"), ": ", e.what()));
  }
  static const std::vector<std::string> shape_keys = {
      "model.d_model", "model.n_layer",   "model.d_state",   "model.d_conv", "model.expand",        "model.d_inner",
      "model.dt_rank", "model.conv_bias", "model.proj_bias", "model.norm",   "model.tie_embeddings"};
  static const std::vector<std::string> variant_keys = {"model.d_model", "model.n_layer", "model.d_state",
                                                        "model.d_conv", "model.expand"};
  const bool variant = g.has("model.variant") && !c.model.variant.empty();
  TrainConfig theirs = c;
  theirs.model.mamba = src.config;
  std::string mismatch;
  for (const Key& k : schema::keys()) {
    if (k.section() != "model" || k.path == "model.variant" || k.path == "model.head" ||
        k.path == "model.num_classes" || k.path == "model.pooling" || k.path == "model.init_from")
      continue;
    const std::string mine = schema::format_yaml(k, k.get(c)), src_value = schema::format_yaml(k, k.get(theirs));
    const bool zero_derives = k.path == "model.d_inner" || k.path == "model.dt_rank" || k.path == "model.vocab_size";
    bool given =
        g.has(k.path) || (variant && std::find(variant_keys.begin(), variant_keys.end(), k.path) != variant_keys.end());
    if (zero_derives && mine == "0") given = false;
    if (k.path == "model.vocab_size") {
      if (given && c.model.mamba.vocab_size < src.config.vocab_size)
        mismatch += str(mismatch.empty() ? "" : "; ", k.path, ": ", mine, " here, ", src_value,
                        " in the source (the embedding can grow, not shrink)");
      continue;
    }
    if (k.path == "model.bidirectional_weights" && !src.config.bidirectional) continue;  // no reverse weights there
    const bool shape = std::find(shape_keys.begin(), shape_keys.end(), k.path) != shape_keys.end() ||
                       k.path == "model.bidirectional_weights";
    if (given && shape && mine != src_value)
      mismatch += str(mismatch.empty() ? "" : "; ", k.path, ": ", mine, " here, ", src_value, " in the source");
    if (!given) k.set(c, k.get(theirs));
  }
  if (!mismatch.empty())
    fail(at, "model.init_from",
         str("the model keys given disagree with ", src.describe(), ": ", mismatch,
             " (leave them out: the dimensions come from the source)"));
  c.model.mamba.pad_vocab_size_multiple = src.config.pad_vocab_size_multiple;
  c.model.mamba.pad_token_id = src.config.pad_token_id;
  c.model.mamba.bos_token_id = src.config.bos_token_id;
  c.model.mamba.eos_token_id = src.config.eos_token_id;
  if (c.model.mamba.vocab_size == 0) {
    const int64_t needed = c.data.kind == "selective_copying" ? c.data.copy_vocab + 2 : model_vocab(c);
    c.model.mamba.vocab_size =
        needed <= src.config.vocab_size ? src.config.vocab_size : src.config.padded_vocab(needed);
  }
}

void check_cross(const TrainConfig& c, const Given& g, bool check_files) {
  auto fail_at = [&](const std::string& path, const std::string& problem) { fail(g.of(path), path, problem); };

  const auto& m = c.model.mamba;
  if (m.dt_min > m.dt_max) {
    const std::string p = g.blame("model.dt_min", "model.dt_max");
    if (p == "model.dt_min")
      fail_at(p, str("must be <= model.dt_max = ", schema::format_double(m.dt_max), ", got ",
                     schema::format_double(m.dt_min)));
    fail_at(p, str("must be >= model.dt_min = ", schema::format_double(m.dt_min), ", got ",
                   schema::format_double(m.dt_max)));
  }
  {
    // Size sanity in double arithmetic (an upper bound of MambaConfig::num_parameters), so that no int64 size
    // computation downstream can overflow: 10^15 parameters is far beyond anything trainable.
    const double d = static_cast<double>(m.d_model), N = static_cast<double>(m.d_state);
    const double di = m.d_inner > 0 ? static_cast<double>(m.d_inner) : static_cast<double>(m.expand) * d;
    const double r = m.dt_rank > 0 ? static_cast<double>(m.dt_rank) : std::ceil(d / 16.0);
    const double layer = 3 * di * d + di * (static_cast<double>(m.d_conv) + 2 * r + 3 * N + 4) + 2 * d;
    const double total = 2 * static_cast<double>(m.vocab_size) * d + static_cast<double>(m.n_layer) * layer;
    if (total > 1e15) {
      fail_at(g.blame("model.d_model", "model.n_layer"),
              str("the model would have about ", schema::format_double(std::round(total / 1e12)),
                  " trillion parameters (at most 10^15)"));
    }
  }
  if ((c.model.head == "sequence_classification" || c.model.head == "token_classification") &&
      c.model.num_classes < 2) {
    fail_at(g.blame("model.num_classes", "model.head"),
            str("model.head ", c.model.head, " needs model.num_classes >= 2, got ", c.model.num_classes));
  }

  const auto& d = c.data;
  if (d.kind == "text") {
    if (d.path.empty() && check_files) {
      fail_at(g.blame("data.path", "data.kind"), "data.path is required when data.kind is text (the corpus file)");
    }
    std::error_code ec;
    // PATH.000.bin, PATH.001.bin, ...: the split token shards that `mamba-train prepare --max-shard-tokens` writes.
    const bool shard_set = !std::filesystem::exists(d.path, ec) && std::filesystem::exists(d.path + ".000.bin", ec);
    if (check_files && !shard_set && !std::filesystem::exists(d.path, ec)) {
      fail_at("data.path", str("no such file '", d.path, "'", cwd_hint(d.path)));
    }
    if (check_files && !shard_set && !std::filesystem::is_regular_file(d.path, ec))
      fail_at("data.path", str("'", d.path, "' is not a regular file"));
  } else if (d.kind == "selective_copying" && d.seq_len <= 2 * d.copy_tokens) {  // both <= 2^30 (schema)
    const std::string p = g.blame("data.seq_len", "data.copy_tokens");
    if (p == "data.seq_len") {
      fail_at(p, str("must be > 2 * data.copy_tokens = ", 2 * d.copy_tokens,
                     " (the data tokens, then as many markers), got ", d.seq_len));
    }
    fail_at(p, str("must be < data.seq_len / 2 = ", schema::format_double(d.seq_len / 2.0), ", got ", d.copy_tokens));
  }
  if (d.kind == "classification") {
    if (c.model.head != "sequence_classification")
      fail_at(g.blame("model.head", "data.kind"),
              str("data.kind classification trains the sequence_classification head, got model.head ", c.model.head));
    if (d.format == "fasta") {
      if (c.tokenizer.kind != "dna")
        fail_at(g.blame("tokenizer.kind", "data.format"), "data.format fasta needs tokenizer.kind dna");
      if (d.class_files.empty() && check_files)
        fail_at(g.blame("data.class_files", "data.format"),
                "data.format fasta needs data.class_files (comma-separated FASTA files, one per class)");
      for (const std::string& f : class_file_list(d)) {
        std::error_code ec;
        if (check_files && (f.empty() || !std::filesystem::is_regular_file(f, ec)))
          fail_at("data.class_files", str("no such file '", f, "'", cwd_hint(f)));
      }
    } else {
      std::error_code ec;
      if (d.path.empty() && check_files)
        fail_at(g.blame("data.path", "data.kind"), str("data.path is required for data.format ", d.format));
      if (check_files && !std::filesystem::is_regular_file(d.path, ec))
        fail_at("data.path", str("no such file '", d.path, "'", cwd_hint(d.path)));
      if (check_files && !d.val_path.empty() && !std::filesystem::is_regular_file(d.val_path, ec))
        fail_at("data.val_path", str("no such file '", d.val_path, "'", cwd_hint(d.val_path)));
    }
    if (!d.label_names.empty() && static_cast<int64_t>(d.label_names.size()) != c.model.num_classes)
      fail_at(
          g.blame("data.label_names", "model.num_classes"),
          str("data.label_names lists ", d.label_names.size(), " classes, model.num_classes is ", c.model.num_classes));
    if (d.val_path.empty() && !(d.val_fraction > 0))
      fail_at(g.blame("data.val_fraction", "data.val_path"),
              "data.val_fraction must be > 0 when there is no data.val_path (a validation split is needed)");
    if (d.test_fraction > 0 && !d.val_path.empty())
      fail_at(g.blame("data.test_fraction", "data.val_path"),
              "data.test_fraction splits the rows of data.path, which a data.val_path run does not split: hold out a "
              "test file of your own and score it with `mamba-train evaluate --data`");
    if (d.test_fraction > 0 && !(d.val_fraction + d.test_fraction < 1))
      fail_at(g.blame("data.test_fraction", "data.val_fraction"),
              str("data.val_fraction + data.test_fraction must be < 1 (some rows must train), got ", d.val_fraction,
                  " + ", d.test_fraction));
  }
  if (d.test_fraction > 0 && d.kind != "classification")
    fail_at(g.blame("data.test_fraction", "data.kind"),
            str("data.test_fraction holds out rows of data.kind classification, got data.kind ", d.kind));
  if (!d.label_names.empty() && d.kind != "classification")
    fail_at("data.label_names", str("names the classes of data.kind classification, got data.kind ", d.kind));
  if (d.rc_augment && c.tokenizer.kind != "dna")
    fail_at(g.blame("data.rc_augment", "tokenizer.kind"), "data.rc_augment needs tokenizer.kind dna");
  // The embedding must hold every token id the data produces.
  const bool copying = d.kind == "selective_copying";
  const int64_t needed = copying ? d.copy_vocab + 2 : m.vocab_size != 0 ? model_vocab(c) : 0;
  if (m.vocab_size != 0 && m.vocab_size < needed) {
    fail_at("model.vocab_size", str("must be >= ", needed,
                                    copying ? str(" (selective_copying uses ids 0..copy_vocab + 1 = ", needed - 1, ")")
                                            : str(" (the ", c.tokenizer.kind, " tokenizer's vocabulary",
                                                  c.trainer.objective == "mlm" ? " and the mask token" : "", ")"),
                                    " or 0 to take it from the data, got ", m.vocab_size));
  }

  const auto& t = c.trainer;
  if (t.global_batch_size % t.micro_batch_size != 0) {
    const std::string p = g.blame("trainer.global_batch_size", "trainer.micro_batch_size");
    fail_at(p, str("trainer.global_batch_size (", t.global_batch_size,
                   ") must be a multiple of trainer.micro_batch_size (", t.micro_batch_size, ")"));
  }
  if (t.epochs > 0 && t.max_steps > 0 && g.has("trainer.max_steps"))
    fail_at(g.blame("trainer.epochs", "trainer.max_steps"),
            "set trainer.max_steps or trainer.epochs, not both (the length of the run is one of them)");
  if (!(t.epochs > 0) && t.max_steps == 0)
    fail_at(g.blame("trainer.max_steps", "trainer.epochs"), "must be >= 1 (or give trainer.epochs), got 0");
  if (t.epochs > 0 && d.kind == "selective_copying")
    fail_at(g.blame("trainer.epochs", "data.kind"),
            "trainer.epochs needs data of a finite size (data.kind text or classification); selective_copying draws "
            "new samples forever: give trainer.max_steps");
  if (c.scheduler.warmup_steps > 0 && c.scheduler.warmup_ratio > 0)
    fail_at(g.blame("scheduler.warmup_ratio", "scheduler.warmup_steps"),
            "set scheduler.warmup_steps or scheduler.warmup_ratio, not both");
  if (t.max_steps > 0 && !(t.epochs > 0) && c.scheduler.warmup_steps >= t.max_steps) {
    const std::string p = g.blame("scheduler.warmup_steps", "trainer.max_steps");
    fail_at(p, str("scheduler.warmup_steps (", c.scheduler.warmup_steps, ") must be < trainer.max_steps (", t.max_steps,
                   ")"));
  }
  if (t.chunk_len > 0 && c.model.head != "lm")
    fail_at(
        g.blame("trainer.chunk_len", "model.head"),
        str("trainer.chunk_len trains language models (model.head lm) chunk by chunk, got model.head ", c.model.head));
  if (t.chunk_len > 0 && m.bidirectional)
    fail_at(g.blame("trainer.chunk_len", "model.bidirectional"),
            "trainer.chunk_len needs a causal model: model.bidirectional scans the whole sequence backwards too");
  if (m.bidirectional && c.model.head == "lm" && t.objective != "mlm")
    fail_at(g.blame("model.bidirectional", "trainer.objective"),
            "model.bidirectional with model.head lm would train the next-token objective on targets the model can "
            "see (its reverse scan reads the next token): set trainer.objective mlm, or train a classification head");
  if (t.objective == "mlm" && (c.model.head != "lm" || d.kind != "text"))
    fail_at(g.blame("trainer.objective", "model.head"),
            str("trainer.objective mlm trains a language model (model.head lm) on data.kind text, got model.head ",
                c.model.head, " and data.kind ", d.kind));
  if (m.rc_equivariant && c.tokenizer.kind != "dna")
    fail_at(g.blame("model.rc_equivariant", "tokenizer.kind"),
            "model.rc_equivariant needs DNA tokens (tokenizer.kind dna): the reverse complement is a DNA notion");
  if (m.rc_equivariant && c.model.head == "lm" && t.objective != "mlm")
    fail_at(g.blame("model.rc_equivariant", "trainer.objective"),
            "model.rc_equivariant reads the reverse strand, which holds the next token: a language model needs "
            "trainer.objective mlm");
  if (t.chunk_len > 0 && c.model.dropout > 0)
    fail_at(g.blame("trainer.chunk_len", "model.dropout"),
            "trainer.chunk_len runs each chunk's forward twice (once for the states, once for the gradient), and "
            "model.dropout would draw a different mask each time: set one of them to 0");
  if (c.model.classifier_dropout > 0 && c.model.head == "lm")
    fail_at(g.blame("model.classifier_dropout", "model.head"),
            "model.classifier_dropout acts on a classification head's input; model.head lm has none (model.dropout "
            "acts inside the blocks)");
  if (t.objective == "mlm" && t.chunk_len > 0)
    fail_at(g.blame("trainer.chunk_len", "trainer.objective"),
            "trainer.chunk_len trains the next-token objective; trainer.objective mlm needs whole sequences");
  if (t.early_stop_patience > 0 && c.checkpoint.monitor.empty())
    fail_at(g.blame("trainer.early_stop_patience", "checkpoint.monitor"),
            "trainer.early_stop_patience needs checkpoint.monitor (the evaluation metric that must improve)");
  if (c.scheduler.min_lr > c.optimizer.lr) {
    const std::string p = g.blame("scheduler.min_lr", "optimizer.lr");
    fail_at(p, str("scheduler.min_lr (", schema::format_double(c.scheduler.min_lr), ") must be <= optimizer.lr (",
                   schema::format_double(c.optimizer.lr), ")"));
  }
}

}  // namespace

// A config is UTF-8 text (YAML requires it): no invalid sequences, no NUL or other control characters but tab and
// line ends. Names the first offending byte by line and column.
void check_text(const std::string& t, const std::string& source) {
  int line = 1, col = 1;
  for (size_t i = 0; i < t.size();) {
    const unsigned char c = static_cast<unsigned char>(t[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= t.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(t[i + k]) & 0xc0) == 0x80;
    if (ok && len == 2) ok = c >= 0xc2;  // no overlong forms
    if (!ok)
      config_error(str(source, ":", line, ":", col, ": invalid UTF-8 (byte 0x", std::hex, static_cast<int>(c),
                       "): a config must be UTF-8 text"));
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
      config_error(str(source, ":", line, ":", col, ": control character 0x", std::hex, static_cast<int>(c),
                       " (a NUL or binary data?): a config must be text"));
    if (c == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
    i += len;
  }
}

// A quoted value must close on its own line: YAML lets an open quote run on over the following lines (to the next
// quote or the end of the file), which turns a typo into a confusing error about keys it swallowed.
void check_quotes(const std::string& t, const std::string& source) {
  int line = 0;
  size_t pos = 0;
  while (pos <= t.size()) {
    size_t end = t.find('\n', pos);
    if (end == std::string::npos) end = t.size();
    const std::string l = t.substr(pos, end - pos);
    ++line;
    pos = end + 1;
    size_t i = l.find_first_not_of(" \t");
    if (i == std::string::npos || l[i] == '#') continue;
    if (l[i] == '-' && i + 1 < l.size() && l[i + 1] == ' ') {
      i = l.find_first_not_of(" \t", i + 1);
    } else {
      const size_t colon = l.find(": ", i);
      if (colon == std::string::npos || l.compare(i, 1, "\"") == 0 || l.compare(i, 1, "'") == 0) continue;
      i = l.find_first_not_of(" \t", colon + 1);
    }
    if (i == std::string::npos || (l[i] != '"' && l[i] != '\'')) continue;
    const char qc = l[i];
    bool closed = false;
    for (size_t k = i + 1; k < l.size(); ++k) {
      if (qc == '"' && l[k] == '\\') {
        ++k;
      } else if (l[k] == qc) {
        if (qc == '\'' && k + 1 < l.size() && l[k + 1] == '\'') {
          ++k;  // '' is an escaped quote
        } else {
          closed = true;
          break;
        }
      }
    }
    if (!closed)
      config_error(str(source, ":", line, ":", i + 1,
                       ": the quoted value is not closed on this line (a config's "
                       "values are one line each)"));
    if (end == t.size()) break;
  }
}

TrainConfig load_train_config(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides, bool check_files) {
  if (yaml_text.size() > kMaxConfigBytes) {
    config_error(str(source, ": config too large: ", yaml_text.size(), " bytes (at most ", kMaxConfigBytes, ")"));
  }
  check_text(yaml_text, source);
  check_quotes(yaml_text, source);
  Given g(source);
  read_tree(parse_strict_yaml(yaml_text, source), source, g);
  read_overrides(overrides, g);
  // No value of ours spans lines: one that does is almost always a quote left open, which YAML then runs on to the
  // next quote or the end of the file.
  for (size_t i = 0; i < schema::keys().size(); ++i)
    if (g.set[i] && g.value[i].s.find('\n') != std::string::npos)
      fail(g.origin[i], schema::keys()[i].path,
           "the value spans several lines (a quote left open? it runs on to the next quote or the end of the file)");

  TrainConfig c = schema::defaults();
  const Key* variant = schema::find("model.variant");
  if (g.set[g.index(variant)] && !g.value[g.index(variant)].s.empty()) {
    // A published size as the starting point; derived sizes and the vocabulary are re-derived unless given.
    c.model.mamba = MambaConfig::variant(g.value[g.index(variant)].s);
    c.model.mamba.d_inner = 0;
    c.model.mamba.dt_rank = 0;
    c.model.mamba.vocab_size = 0;
  }
  for (const Key& k : schema::keys()) {
    if (g.set[g.index(&k)]) k.set(c, g.value[g.index(&k)]);
  }
  // Shipped files (corpora, tokenizers) are also found under an installation's share directory (core/paths.h).
  c.tokenizer.path = shipped_path(c.tokenizer.path);
  c.data.path = shipped_path(c.data.path);
  c.data.val_path = shipped_path(c.data.val_path);
  c.model.init_from = shipped_path(c.model.init_from);
  if (!c.data.class_files.empty()) {
    const std::vector<std::string> list = class_file_list(c.data);
    std::string files;
    for (size_t i = 0; i < list.size(); ++i) files += (i ? "," : "") + shipped_path(list[i]);
    c.data.class_files = files;
  }
  // A stored config read back (check_files false) already holds the source's dimensions; its source may be gone.
  if (!c.model.init_from.empty() && check_files) apply_init_source(c, g);
  check_cross(c, g, check_files);

  // Derived defaults.
  if (c.model.mamba.vocab_size == 0) {
    c.model.mamba.vocab_size = c.data.kind == "selective_copying" ? c.data.copy_vocab + 2 : model_vocab(c);
  }
  if (c.model.mamba.rc_equivariant) {  // DNA: A <-> T, C <-> G; every other id (N, specials, mask) is its own
    std::vector<int64_t>& comp = c.model.mamba.rc_complement;
    comp.resize(static_cast<size_t>(c.model.mamba.vocab_size));
    for (size_t v = 0; v < comp.size(); ++v) comp[v] = static_cast<int64_t>(v);
    if (comp.size() > static_cast<size_t>(data::kDnaT)) {
      std::swap(comp[data::kDnaA], comp[data::kDnaT]);
      std::swap(comp[data::kDnaC], comp[data::kDnaG]);
    }
  }
  try {
    c.model.mamba.finalize();
  } catch (const Error& e) {
    config_error(str(source, ": model: ", e.what()));
  }
  if (c.trainer.epochs > 0) c.trainer.max_steps = 0;  // the trainer derives the steps from the data's size
  if (c.run.out_dir.empty()) c.run.out_dir = "runs/" + c.run.name;
  if (c.checkpoint.dir.empty()) c.checkpoint.dir = c.run.out_dir + "/checkpoints";
  if (c.logging.metrics_file.empty()) c.logging.metrics_file = c.run.out_dir + "/metrics.jsonl";
  return c;
}

TrainConfig load_train_config_file(const std::string& config_path, const std::vector<std::string>& overrides) {
  const std::string path = shipped_path(config_path);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    config_error(str(path, ": is a directory, expected a YAML config file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) config_error(str(path, ": cannot read the config file: ", std::strerror(errno)));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) {
      config_error(str(path, ": config too large: more than ", kMaxConfigBytes, " bytes"));
    }
  }
  if (in.bad()) config_error(str(path, ": error reading the config file"));
  return load_train_config(text, path, overrides);
}

void apply_overrides(TrainConfig& c, const std::vector<std::string>& overrides) {
  const std::string source = "--set";
  Given g(source);
  read_overrides(overrides, g);
  const Key* variant = schema::find("model.variant");
  if (g.set[g.index(variant)] && !g.value[g.index(variant)].s.empty())
    c.model.mamba = MambaConfig::variant(g.value[g.index(variant)].s);
  for (const Key& k : schema::keys())
    if (g.set[g.index(&k)]) k.set(c, g.value[g.index(&k)]);
  try {
    c.model.mamba.finalize();
  } catch (const Error& e) {
    config_error(str("--set: model: ", e.what()));
  }
}

std::vector<std::string> class_file_list(const DataSection& d) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = d.class_files.find(',', start);
    out.push_back(d.class_files.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

std::string dump_train_config(const TrainConfig& c) {
  std::string out = "# mamba-train training config, resolved: every key, defaults filled in (configs/README.md)\n";
  for (const std::string& sec : schema::sections()) {
    out += sec + ":\n";
    for (const Key& k : schema::keys()) {
      if (k.section() == sec) out += str("  ", k.leaf(), ": ", schema::format_yaml(k, k.get(c)), "\n");
    }
  }
  return out;
}

std::map<std::string, std::string> config_values(const TrainConfig& c) {
  std::map<std::string, std::string> out;
  for (const Key& k : schema::keys()) out[k.path] = schema::format_yaml(k, k.get(c));
  return out;
}

std::map<std::string, std::string> config_values_from_yaml(const std::string& yaml_text, const std::string& source) {
  std::map<std::string, std::string> out;
  const YamlNode root = parse_strict_yaml(yaml_text, source);
  if (root.kind != YamlNode::Kind::Map) return out;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const YamlNode& sv = root.items[i];
    if (sv.kind != YamlNode::Kind::Map) continue;
    for (size_t j = 0; j < sv.keys.size(); ++j) {
      const std::string path = root.keys[i].value + "." + sv.keys[j].value;
      const Key* k = schema::find(path);
      if (!k) continue;
      const YamlNode& n = sv.items[j];
      try {
        out[path] = schema::format_yaml(*k, parse_value(*k, n, at(source, n), at(source, sv.keys[j])));
      } catch (const Error&) {
        out[path] = n.kind == YamlNode::Kind::Scalar ? n.value : describe_yaml_node(n);
      }
    }
  }
  return out;
}

std::string config_default_text(const std::string& path) {
  const Key* k = schema::find(path);
  if (!k || !k->default_note.empty()) return "";
  return schema::format_yaml(*k, k->get(schema::defaults()));
}

}  // namespace mt::train
