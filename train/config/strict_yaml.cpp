// Strict YAML: yaml-cpp's event stream -> YamlNode tree, refusing what yaml-cpp 0.7.0 accepts silently
// (see strict_yaml.h and docs/DESIGN.md F6). Every check happens while the events arrive, so an alias bomb, a huge
// file or deep nesting stops at the first offending event instead of after a full parse.
#include "train/config/strict_yaml.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <sstream>
#include <unordered_map>
#include <utility>

#include "core/error.h"

namespace mt::train {
namespace {

std::string position(const std::string& source, const YAML::Mark& m) {
  if (m.is_null() || m.line < 0) return source;
  return str(source, ":", m.line + 1, ":", m.column + 1);  // yaml-cpp marks are 0-based
}

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// "tag:yaml.org,2002:str" -> "!!str" (how it was written).
std::string shown_tag(const std::string& tag) {
  const std::string core = "tag:yaml.org,2002:";
  return tag.compare(0, core.size(), core) == 0 ? "!!" + tag.substr(core.size()) : tag;
}

class TreeBuilder : public YAML::EventHandler {
 public:
  explicit TreeBuilder(const std::string& source) : source_(source) {}

  bool has_root() const { return has_root_; }
  YamlNode take_root() { return std::move(root_); }

  void OnDocumentStart(const YAML::Mark& mark) override {
    stack_.clear();
    Frame doc;
    doc.node.kind = YamlNode::Kind::Seq;  // pseudo-collection holding the document's single root node
    stack_.push_back(std::move(doc));
    doc_mark_ = mark;
  }
  void OnDocumentEnd() override {
    if (!stack_.empty() && !stack_[0].node.items.empty()) {
      root_ = std::move(stack_[0].node.items[0]);
    } else {
      root_ = YamlNode();
      root_.line = doc_mark_.line + 1;
      root_.col = doc_mark_.column + 1;
    }
    has_root_ = true;
    stack_.clear();
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    begin_node(mark, anchor);
    if (at_key()) fail(mark, top().path, "a mapping key is empty");
    add(make(YamlNode::Kind::Null, mark), mark);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    fail(mark, child_path(), "anchors and aliases are not allowed (found an alias '*')");
  }
  void OnAnchor(const YAML::Mark& mark, const std::string& name) override {
    fail(mark, child_path(), str("anchors and aliases are not allowed (found the anchor '&", name, "')"));
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    begin_node(mark, anchor);
    // yaml-cpp reports "?" for an untagged plain scalar and "!" for a quoted / block one (or an explicit "!").
    if (tag != "?" && tag != "!") fail(mark, child_path(), str("tags are not allowed (found '", shown_tag(tag), "')"));
    YamlNode n = make(YamlNode::Kind::Scalar, mark);
    n.value = value;
    n.quoted = (tag == "!");
    if (at_key()) {
      Frame& f = top();
      const std::string path = join_path(f.path, value);
      if (value == "<<") fail(mark, f.path, "merge keys (<<) are not allowed");
      auto it = f.seen.find(value);
      if (it != f.seen.end()) {
        fail(mark, path, str("duplicate key: already set at line ", it->second, " (each key may appear once)"));
      }
      f.seen.emplace(value, mark.line + 1);
      f.last_key = value;
    }
    add(std::move(n), mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, YamlNode::Kind::Seq);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, YamlNode::Kind::Map);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Frame {
    YamlNode node;
    std::string path;  // key path of this collection ("" for the document, "optimizer", "a.b[2]")
    std::string last_key;
    std::unordered_map<std::string, int> seen;  // key -> 1-based line of its first occurrence
    YAML::Mark mark;
  };

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& path, const std::string& problem) {
    throw Error(ErrorKind::Config,
                one_line(str(position(source_, mark), ": ", path.empty() ? "" : path + ": ", problem)));
  }

  Frame& top() { return stack_.back(); }
  // True when the next node added to the top collection is a mapping key.
  bool at_key() const {
    const YamlNode& n = stack_.back().node;
    return n.kind == YamlNode::Kind::Map && n.keys.size() == n.items.size();
  }
  // Key path of the node about to be added (for messages).
  std::string child_path() const {
    if (stack_.empty()) return "";
    const Frame& f = stack_.back();
    if (f.node.kind == YamlNode::Kind::Map) {
      return f.node.keys.size() > f.node.items.size() ? join_path(f.path, f.last_key) : f.path;
    }
    if (stack_.size() == 1) return "";  // the document root
    return str(f.path, "[", f.node.items.size(), "]");
  }

  void begin_node(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != 0) fail(mark, child_path(), "anchors and aliases are not allowed");
    if (++nodes_ > kYamlMaxNodes) {
      fail(mark, "", str("config too large: more than ", kYamlMaxNodes, " YAML nodes"));
    }
  }
  static YamlNode make(YamlNode::Kind kind, const YAML::Mark& mark) {
    YamlNode n;
    n.kind = kind;
    n.line = mark.line + 1;
    n.col = mark.column + 1;
    return n;
  }
  void add(YamlNode n, const YAML::Mark&) {
    YamlNode& parent = top().node;
    if (parent.kind == YamlNode::Kind::Map && parent.keys.size() == parent.items.size()) {
      parent.keys.push_back(std::move(n));
    } else {
      parent.items.push_back(std::move(n));
    }
  }

  void open(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor, YamlNode::Kind kind) {
    begin_node(mark, anchor);
    if (tag != "?") fail(mark, child_path(), str("tags are not allowed (found '", shown_tag(tag), "')"));
    if (at_key()) fail(mark, top().path, "mapping keys must be plain scalars, not a mapping or a sequence");
    if (static_cast<int>(stack_.size()) > kYamlMaxDepth) {  // stack_[0] is the document
      fail(mark, child_path(), str("config too deeply nested: more than ", kYamlMaxDepth, " levels"));
    }
    Frame f;
    f.path = child_path();
    f.node = make(kind, mark);
    f.mark = mark;
    stack_.push_back(std::move(f));
  }
  void close() {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    add(std::move(f.node), f.mark);
  }

  const std::string& source_;
  std::vector<Frame> stack_;
  YAML::Mark doc_mark_;
  YamlNode root_;
  bool has_root_ = false;
  int nodes_ = 0;
};

// Handler for the look-ahead after the first document: any second document is refused at its first event.
class SecondDocumentProbe : public YAML::EventHandler {
 public:
  explicit SecondDocumentProbe(const std::string& source) : source_(source) {}
  void OnDocumentStart(const YAML::Mark& mark) override {
    throw Error(ErrorKind::Config,
                one_line(str(position(source_, mark),
                             ": several YAML documents (---) are not allowed: a config is one document")));
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  const std::string& source_;
};

// yaml-cpp's message for a tab in the indentation ("illegal map value", ...) does not say so: add it.
std::string tab_hint(const std::string& text, const YAML::Mark& m) {
  if (m.is_null() || m.line < 0) return "";
  size_t start = 0;
  for (int line = 0; line < m.line && start != std::string::npos; ++line) {
    start = text.find('\n', start);
    if (start != std::string::npos) ++start;
  }
  if (start == std::string::npos) return "";
  const size_t indent_end = text.find_first_not_of(" \t", start);
  const size_t tab = text.find('\t', start);
  if (tab != std::string::npos && (indent_end == std::string::npos || tab < indent_end)) {
    return " (this line is indented with a tab: YAML indents with spaces)";
  }
  return "";
}

}  // namespace

YamlNode parse_strict_yaml(const std::string& text, const std::string& source) {
  std::istringstream in(text);
  try {
    YAML::Parser parser(in);
    TreeBuilder builder(source);
    // Exactly two calls, never a loop: on some inputs (",") yaml-cpp 0.7.0 yields empty documents forever without
    // consuming anything, which is how YAML::LoadAll hangs.
    if (!parser.HandleNextDocument(builder) || !builder.has_root()) return YamlNode();  // empty input
    YamlNode root = builder.take_root();
    // A document whose root has no value is either empty ("---") or something yaml-cpp could not read as a node
    // (","): the caller reports it; looking for a second document would only repeat the same empty one.
    if (root.kind == YamlNode::Kind::Null) return root;
    SecondDocumentProbe probe(source);
    parser.HandleNextDocument(probe);
    return root;
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::Config,
                one_line(str(position(source, e.mark), ": invalid YAML: ", e.msg, tab_hint(text, e.mark))));
  }
}

std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string describe_yaml_node(const YamlNode& n) {
  switch (n.kind) {
    case YamlNode::Kind::Null: return "no value";
    case YamlNode::Kind::Map: return "a mapping";
    case YamlNode::Kind::Seq: return "a sequence";
    case YamlNode::Kind::Scalar: break;
  }
  const std::string v = n.value.size() > 60 ? n.value.substr(0, 57) + "..." : n.value;
  return n.quoted ? "the quoted string '" + v + "'" : "'" + v + "'";
}

}  // namespace mt::train
