// A strict YAML reader for configuration files: yaml-cpp's event parser (YAML::Parser + an EventHandler) builds a
// small tree of plain nodes that remember where they came from, and refuses what yaml-cpp 0.7.0 would silently
// accept (docs/DESIGN.md F6):
//   - several documents ("---" followed by a second document): yaml-cpp drops all but the first;
//   - duplicate keys in one mapping: yaml-cpp keeps the first silently;
//   - anchors and aliases (&a / *a): a 450-byte alias bomb expands to a billion nodes in a naive walk;
//   - merge keys ("<<"), tags (!foo, !!str), keys that are not scalars (? [a, b]) or empty;
//   - more than kMaxNodes nodes or more than kMaxDepth nested collections.
// YAML::LoadAll is never used: on the input "," it loops forever while memory grows.
//
// Scalars keep their text and whether they were quoted: typing (int / float / bool / enum) belongs to the caller,
// which knows the schema. Plain null spellings ("", ~, null, Null, NULL) become Kind::Null.
//
// Errors: mt::Error(ErrorKind::Config) with one line "<source>:<line>:<col>: [<key.path>: ]<problem>", 1-based
// positions; yaml-cpp's own syntax errors keep its message and position.
#pragma once

#include <string>
#include <vector>

namespace mt::train {

struct YamlNode {
  enum class Kind { Null, Scalar, Map, Seq };
  Kind kind = Kind::Null;
  int line = 0, col = 0;  // 1-based position of the node (for a map: of its first key)
  std::string value;      // Scalar: the text (escapes resolved)
  bool quoted = false;    // Scalar: written quoted or as a block scalar ('...', "...", |, >)
  // Map: keys[i] -> items[i] (keys are scalars, unique). Seq: items.
  std::vector<YamlNode> keys;
  std::vector<YamlNode> items;
};

constexpr int kYamlMaxNodes = 10000;
constexpr int kYamlMaxDepth = 32;

// Parse exactly one document. Empty input (or only comments) gives a Null root.
YamlNode parse_strict_yaml(const std::string& text, const std::string& source);

// Control characters (newline, tab, NUL, ...) as escapes ("\\n", "\\x01"): error messages stay one line whatever
// the user's text holds.
std::string one_line(const std::string& s);

// "mapping", "sequence", "no value" or the scalar text in quotes: for "expected ..., got <description>".
std::string describe_yaml_node(const YamlNode& n);

}  // namespace mt::train
