// The schema of the YAML training config (internal to train/): ONE table (config_schema.cpp) lists every key path,
// its type, range, default and a one-line doc. The loader (config.cpp), the dump, the did-you-mean suggestions and
// the reference in configs/README.md all come from it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/config/config.h"

namespace mt::train::schema {

enum class Type { Int, Float, Bool, String, Enum, List };  // List: a list of strings

// One typed value; only the member matching the key's type is meaningful (Enum uses s).
struct Value {
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string s;
  std::vector<std::string> list;
};

struct Key {
  std::string path;  // "optimizer.lr"
  Type type = Type::String;
  std::vector<std::string> choices;  // Enum: the allowed spellings
  // Range of Int / Float keys: lo <= v (lo < v when lo_open), v <= hi (v < hi when hi_open).
  bool has_lo = false, lo_open = false, has_hi = false, hi_open = false;
  double lo = 0.0, hi = 0.0;
  std::string default_note;  // README text for a default derived from other keys ("runs/<run.name>")
  std::string doc;           // one line for configs/README.md
  std::function<Value(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const Value&)> set;
  std::function<std::string(const Value&)> check;  // extra rule: "" when fine, else the problem ("must not be empty")

  std::string section() const { return path.substr(0, path.find('.')); }
  std::string leaf() const { return path.substr(path.find('.') + 1); }
};

// Every key, sections in the order of train/config/config.h.
const std::vector<Key>& keys();
const std::vector<std::string>& sections();
const Key* find(const std::string& path);  // nullptr when unknown

// The defaults every config starts from: TrainConfig{} except model.vocab_size = 0 ("take it from the tokenizer").
TrainConfig defaults();

// "int", "float", "bool", "string", "one of: a, b, c", "list of strings".
std::string type_name(const Key& k);
// "expected an integer" / "expected a number" / "expected true or false" / "expected one of [a, b]" / ...
std::string expectation(const Key& k);
// "" when in range, else "must be >= 1" / "must be > 0" / "must be < 1".
std::string range_problem(const Key& k, const Value& v);
// ">= 1", "> 0 and < 1", "" (no range): for the README.
std::string range_text(const Key& k);
// The value as YAML text that the loader reads back to the same value (strings double-quoted, shortest
// round-trip floats, lists as flow sequences of double-quoted strings: ["a", "b"]).
std::string format_yaml(const Key& k, const Value& v);
// Shortest decimal text that reads back to exactly x ("0.001", "1e-08", "65536").
std::string format_double(double x);

// The key reference (markdown: one table per section) embedded in configs/README.md between the markers
// "<!-- BEGIN CONFIG KEYS (generated" ... "<!-- END CONFIG KEYS -->" (tests/test_config_yaml.cpp keeps it in sync).
std::string reference_markdown();

}  // namespace mt::train::schema
