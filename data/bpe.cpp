#include "data/bpe.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>

#include <utf8proc.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/gz_reader.h"

namespace mt::data {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxCacheEntries = size_t{1} << 20;  // the word cache is cleared when it grows past this

// Character classes of the GPT-2 pre-tokenizer regex.
enum Cls : uint8_t { kSpace, kLetter, kNumber, kOther };

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid; *bad gets the length of the maximal prefix of
// a valid sequence (at least 1), which Rust's from_utf8_lossy replaces by one U+FFFD. *cp gets the code point.
size_t utf8_seq(const unsigned char* s, size_t n, size_t i, uint32_t* cp, size_t* bad) {
  const unsigned char b = s[i];
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  uint32_t c = b & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    const unsigned char x = i + k < n ? s[i + k] : 0;
    if (i + k >= n || x < lo || x > hi) {
      *bad = k;
      return 0;
    }
    lo = 0x80;
    hi = 0xBF;
    c = (c << 6) | (x & 0x3F);
  }
  *cp = c;
  return len;
}

// Oniguruma's \s for UTF-8 (the White_Space property).
bool is_space_cp(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

Cls cls_of_cp(uint32_t c) {
  if (is_space_cp(c)) return kSpace;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return kNumber;
    default: return kOther;
  }
}

struct AsciiClasses {
  Cls c[128];
  AsciiClasses() {
    for (uint32_t i = 0; i < 128; ++i) c[i] = cls_of_cp(i);
  }
};
const AsciiClasses kAscii;

// Class and byte length of the (valid) code point at s[i].
inline Cls cls_at(const unsigned char* s, size_t n, size_t i, size_t* len) {
  if (s[i] < 0x80) {
    *len = 1;
    return kAscii.c[s[i]];
  }
  uint32_t cp = 0;
  size_t bad = 0;
  *len = utf8_seq(s, n, i, &cp, &bad);
  if (*len == 0) {  // cannot happen on validated, normalized text; treat as one "other" byte
    *len = 1;
    return kOther;
  }
  return cls_of_cp(cp);
}

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100 onwards.
std::array<uint32_t, 256> byte_to_cp() {
  std::array<uint32_t, 256> m{};
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) m[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
  return m;
}

void append_utf8(std::string& s, uint32_t c) {
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// The ByteLevel decoder on one token: every character mapped back to its byte, or the token's own UTF-8 bytes when
// some character is not a byte-level character (HF does the same, e.g. for added tokens made of spaces).
std::string token_bytes(const std::string& tok, const std::unordered_map<uint32_t, uint8_t>& cp_to_byte) {
  std::string out;
  const auto* s = reinterpret_cast<const unsigned char*>(tok.data());
  for (size_t i = 0; i < tok.size();) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8_seq(s, tok.size(), i, &cp, &bad);
    if (len == 0) return tok;
    auto it = cp_to_byte.find(cp);
    if (it == cp_to_byte.end()) return tok;
    out += static_cast<char>(it->second);
    i += len;
  }
  return out;
}

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string json_message(const std::exception& e) {
  std::string m = e.what();
  if (m.rfind("[json.exception.", 0) == 0) {
    const size_t p = m.find("] ");
    if (p != std::string::npos) m = m.substr(p + 2);
  }
  return m;
}

std::string type_or_null(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return "";
  const json& v = j[key];
  return v.is_object() && v.contains("type") && v["type"].is_string() ? v["type"].get<std::string>() : "?";
}

// A short printable form of a token for messages.
std::string shown(const std::string& t) {
  std::string out;
  for (unsigned char c : t) {
    if (c >= 32 && c < 127 && c != '\'') {
      out += static_cast<char>(c);
    } else if (c >= 0x80) {
      out += static_cast<char>(c);  // UTF-8 stays readable
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

void BpeTokenizer::trie_add(Trie& t, const std::string& s, int32_t id) {
  if (t.next.empty()) {
    t.next.emplace_back();
    t.next.back().fill(-1);
    t.id.push_back(-1);
  }
  int32_t node = 0;
  for (unsigned char c : s) {
    if (t.next[node][c] < 0) {
      t.next[node][c] = static_cast<int32_t>(t.next.size());
      t.next.emplace_back();
      t.next.back().fill(-1);
      t.id.push_back(-1);
    }
    node = t.next[node][c];
  }
  t.id[node] = id;
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  const std::string text = read_content(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorKind::Data, str(path, ": not JSON (byte ", e.byte, "): ", json_message(e)));
  } catch (const json::exception& e) {  // e.g. out_of_range 406: a number too large (found by fuzz_tokenizers)
    throw Error(ErrorKind::Data, str(path, ": not usable JSON: ", e.what()));
  }
  BpeTokenizer t;
  t.path_ = path;
  const std::string where = path + ": ";
  try {
    MT_CHECK(j.is_object(), ErrorKind::Data, where, "not a tokenizer.json (the top level is not a JSON object)");
    MT_CHECK(j.contains("model") && j["model"].is_object(), ErrorKind::Data, where,
             "no \"model\" object (not a HuggingFace tokenizer.json?)");
    const json& m = j["model"];
    const std::string mtype = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
    MT_CHECK(mtype == "BPE" || (mtype.empty() && m.contains("merges")), ErrorKind::Data, where, "model.type '", mtype,
             "' is not supported (only BPE)");
    MT_CHECK(m.contains("vocab") && m["vocab"].is_object(), ErrorKind::Data, where,
             "model.vocab is missing or not an object");
    MT_CHECK(m.contains("merges") && m["merges"].is_array(), ErrorKind::Data, where,
             "model.merges is missing or not an array");
    MT_CHECK(!m.contains("dropout") || m["dropout"].is_null() || m["dropout"].get<double>() == 0.0, ErrorKind::Data,
             where, "model.dropout is not supported (the ids would be random)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      MT_CHECK(!m.contains(k) || m[k].is_null() || m[k].get<std::string>().empty(), ErrorKind::Data, where, "model.", k,
               " is not supported");
    }
    t.ignore_merges_ = m.contains("ignore_merges") && m["ignore_merges"].is_boolean() && m["ignore_merges"].get<bool>();

    const std::string norm = type_or_null(j, "normalizer");
    MT_CHECK(norm.empty() || norm == "NFC", ErrorKind::Data, where, "normalizer type '", norm,
             "' is not supported (only NFC or none)");
    t.nfc_ = norm == "NFC";
    const std::string pre = type_or_null(j, "pre_tokenizer");
    MT_CHECK(pre == "ByteLevel", ErrorKind::Data, where, "pre_tokenizer type '", pre.empty() ? "none" : pre,
             "' is not supported (only ByteLevel)");
    const json& pj = j["pre_tokenizer"];
    t.add_prefix_space_ = pj.contains("add_prefix_space") && pj["add_prefix_space"].get<bool>();
    t.use_regex_ = !pj.contains("use_regex") || pj["use_regex"].get<bool>();
    const std::string dec = type_or_null(j, "decoder");
    MT_CHECK(dec.empty() || dec == "ByteLevel", ErrorKind::Data, where, "decoder type '", dec,
             "' is not supported (only ByteLevel or none)");
    const std::string post = type_or_null(j, "post_processor");
    MT_CHECK(post.empty() || post == "ByteLevel", ErrorKind::Data, where, "post_processor type '", post,
             "' is not supported (only ByteLevel or none: others add tokens)");
    for (const char* k : {"truncation", "padding"})
      MT_CHECK(!j.contains(k) || j[k].is_null(), ErrorKind::Data, where, k, " is set; not supported");

    int32_t max_id = -1;
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      MT_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                   it.value().get<int64_t>() < (int64_t{1} << 31),
               ErrorKind::Data, where, "model.vocab['", shown(it.key()), "'] is not a non-negative integer id");
      const int32_t id = it.value().get<int32_t>();
      t.vocab_.emplace(it.key(), id);
      max_id = std::max(max_id, id);
    }
    struct Added {
      std::string content;
      int32_t id;
      bool normalized;
    };
    std::vector<Added> added;
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      MT_CHECK(j["added_tokens"].is_array(), ErrorKind::Data, where, "added_tokens is not an array");
      size_t k = 0;
      for (const json& a : j["added_tokens"]) {
        MT_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a["id"].get<int64_t>() >= 0 &&
                     a.contains("content") && a["content"].is_string(),
                 ErrorKind::Data, where, "added_tokens[", k, "] needs an integer \"id\" and a string \"content\"");
        Added ad{a["content"].get<std::string>(), a["id"].get<int32_t>(), false};
        MT_CHECK(!ad.content.empty(), ErrorKind::Data, where, "added_tokens[", k, "] has empty content");
        for (const char* f : {"lstrip", "rstrip", "single_word"})
          MT_CHECK(!a.contains(f) || !a[f].get<bool>(), ErrorKind::Data, where, "added_tokens[", k, "] ('",
                   shown(ad.content), "'): ", f, " is not supported");
        const bool special = a.contains("special") && a["special"].get<bool>();
        // HF's default: normalized unless special.
        ad.normalized = a.contains("normalized") ? a["normalized"].get<bool>() : !special;
        added.push_back(ad);
        max_id = std::max(max_id, ad.id);
        ++k;
      }
    }
    MT_CHECK(max_id >= 0, ErrorKind::Data, where, "model.vocab is empty");

    // Byte-level characters and the decode table.
    const std::array<uint32_t, 256> b2c = byte_to_cp();
    std::unordered_map<uint32_t, uint8_t> c2b;
    for (int b = 0; b < 256; ++b) {
      c2b[b2c[b]] = static_cast<uint8_t>(b);
      std::string ch;
      append_utf8(ch, b2c[b]);
      // GPT-NeoX has no tokens for the bytes that never occur in UTF-8 (C0 C1 F5..FF). A byte without a token is
      // dropped, as HF's BPE does without an unk_token; valid UTF-8 input never contains such bytes.
      auto it = t.vocab_.find(ch);
      t.byte_id_[b] = it != t.vocab_.end() ? it->second : -1;
    }
    t.id_bytes_.assign(static_cast<size_t>(max_id) + 1, std::string());
    t.id_known_.assign(static_cast<size_t>(max_id) + 1, 0);
    for (const auto& [tok, id] : t.vocab_) {
      t.id_bytes_[id] = token_bytes(tok, c2b);
      t.id_known_[id] = 1;
    }
    for (const Added& a : added) {
      // HF resolves an added token that is also in the model's vocabulary to the model's id.
      auto it = t.vocab_.find(a.content);
      const int32_t id = it != t.vocab_.end() ? it->second : a.id;
      t.added_[a.content] = id;
      t.id_bytes_[a.id] = token_bytes(a.content, c2b);
      t.id_known_[a.id] = 1;
      trie_add(a.normalized ? t.norm_trie_ : t.raw_trie_, a.content, id);
    }
    t.eos_id_ = t.token_id("<|endoftext|>");

    // Merges: "a b" strings (or ["a", "b"] pairs), ranked by position.
    const json& merges = m["merges"];
    t.merges_.reserve(merges.size() * 2);
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& e = merges[r];
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        MT_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, ErrorKind::Data, where,
                 "model.merges[", r, "] '", shown(s), "' is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        MT_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), ErrorKind::Data, where,
                 "model.merges[", r, "] is neither \"a b\" nor [\"a\", \"b\"]");
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      }
      auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), iab = t.vocab_.find(a + b);
      for (const auto& [it, tok] : {std::make_pair(ia, a), std::make_pair(ib, b), std::make_pair(iab, a + b)})
        MT_CHECK(it != t.vocab_.end(), ErrorKind::Data, where, "model.merges[", r, "] '", shown(a), " ", shown(b),
                 "': token '", shown(tok), "' is not in model.vocab");
      const uint64_t key =
          (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) | static_cast<uint32_t>(ib->second);
      t.merges_[key] = Merge{static_cast<int32_t>(r), iab->second};  // a repeated pair: the last rank wins, as in HF
    }
  } catch (const json::exception& e) {
    throw Error(ErrorKind::Data, where + "unexpected JSON value: " + json_message(e));
  }
  return t;
}

int32_t BpeTokenizer::token_id(const std::string& token) const {
  auto a = added_.find(token);
  if (a != added_.end()) return a->second;
  auto v = vocab_.find(token);
  return v != vocab_.end() ? v->second : -1;
}

template <typename Rest>
void BpeTokenizer::split_added(const Trie& t, std::string_view text, std::vector<int32_t>& out, Rest&& rest) const {
  if (t.empty()) {
    if (!text.empty()) rest(text);
    return;
  }
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const std::array<int32_t, 256>& root = t.next[0];
  size_t piece = 0, i = 0;
  while (i < n) {
    int32_t node = root[s[i]];
    if (node < 0) {
      ++i;
      continue;
    }
    // Walk the trie; remember the longest token ending on the way.
    int32_t best_id = -1;
    size_t best_end = 0, k = i + 1;
    for (;;) {
      if (t.id[node] >= 0) {
        best_id = t.id[node];
        best_end = k;
      }
      if (k >= n) break;
      node = t.next[node][s[k]];
      if (node < 0) break;
      ++k;
    }
    if (best_id < 0) {
      ++i;
      continue;
    }
    if (i > piece) rest(text.substr(piece, i - piece));
    out.push_back(best_id);
    i = piece = best_end;
  }
  if (piece < n) rest(text.substr(piece));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view utf8) const {
  // Validate first: HF strings are valid UTF-8 by construction.
  const auto* s = reinterpret_cast<const unsigned char*>(utf8.data());
  const size_t n = utf8.size();
  for (size_t i = 0; i < n;) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8_seq(s, n, i, &cp, &bad);
    MT_CHECK(len > 0, ErrorKind::Data, "invalid UTF-8 at byte offset ", i,
             str(" (byte 0x", std::hex, static_cast<int>(s[i]), ")"));
    i += len;
  }
  std::vector<int32_t> out;
  out.reserve(n / 3 + 4);
  split_added(raw_trie_, utf8, out, [&](std::string_view piece) {
    bool needs_nfc = false;
    if (nfc_) {
      // Code points below U+0300 (lead bytes below 0xCC) are never changed by NFC and never combine with what
      // precedes them, so such text is already normalized.
      for (unsigned char c : piece)
        if (c >= 0xCC) {
          needs_nfc = true;
          break;
        }
    }
    if (!needs_nfc) return encode_normalized(piece, out);
    utf8proc_uint8_t* dst = nullptr;
    const utf8proc_ssize_t len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.data()),
                                              static_cast<utf8proc_ssize_t>(piece.size()), &dst,
                                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (len < 0) {
      std::free(dst);
      throw Error(ErrorKind::Data, str("NFC normalization failed: ", utf8proc_errmsg(len)));
    }
    const std::string normalized(reinterpret_cast<const char*>(dst), static_cast<size_t>(len));
    std::free(dst);
    encode_normalized(normalized, out);
  });
  return out;
}

void BpeTokenizer::encode_normalized(std::string_view piece, std::vector<int32_t>& out) const {
  split_added(norm_trie_, piece, out, [&](std::string_view p) { pretokenize_and_bpe(p, out); });
}

void BpeTokenizer::pretokenize_and_bpe(std::string_view piece_in, std::vector<int32_t>& out) const {
  std::string prefixed;
  std::string_view piece = piece_in;
  if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) {
    prefixed = " " + std::string(piece);
    piece = prefixed;
  }
  if (!use_regex_) return bpe_word(piece, out);
  const auto* s = reinterpret_cast<const unsigned char*>(piece.data());
  const size_t n = piece.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (s[i] == '\'' && i + 1 < n) {
      const unsigned char c1 = s[i + 1], c2 = i + 2 < n ? s[i + 2] : 0;
      size_t m = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
        m = 2;
      else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        m = 3;
      if (m) {
        bpe_word(piece.substr(start, m), out);
        i += m;
        continue;
      }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
    size_t k = s[i] == ' ' ? i + 1 : i;
    if (k < n) {
      size_t len = 0;
      const Cls c = cls_at(s, n, k, &len);
      if (c != kSpace) {
        k += len;
        while (k < n) {
          const Cls c2 = cls_at(s, n, k, &len);
          if (c2 != c) break;
          k += len;
        }
        bpe_word(piece.substr(start, k - start), out);
        i = k;
        continue;
      }
    }
    // \s+(?!\S) | \s+ : here s[i] starts a whitespace run.
    size_t e = i, last = i, len = 0, count = 0;
    while (e < n && cls_at(s, n, e, &len) == kSpace) {
      last = e;
      e += len;
      ++count;
    }
    if (e == i) {  // not reachable: every code point is in one of the classes above
      e = i + 1;
    } else if (e < n && count >= 2) {
      e = last;  // leave the last whitespace character to start the next pre-token
    }
    bpe_word(piece.substr(start, e - start), out);
    i = e;
  }
}

void BpeTokenizer::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    const int32_t id = byte_id_[static_cast<unsigned char>(word[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  std::string key(word);
  auto hit = cache_.find(key);
  if (hit != cache_.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<int32_t> ids;
  if (ignore_merges_) {
    std::string chars;
    static const std::array<uint32_t, 256> b2c = byte_to_cp();
    for (unsigned char b : word) append_utf8(chars, b2c[b]);
    auto v = vocab_.find(chars);
    if (v != vocab_.end()) ids.push_back(v->second);
  }
  if (ids.empty()) {
    // HF's Word::merge_all: a heap of (rank, position), lowest rank first, leftmost among equals.
    struct Sym {
      int32_t c;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Sym> sym;
    sym.reserve(word.size());
    for (unsigned char b : word)
      if (byte_id_[b] >= 0) sym.push_back(Sym{byte_id_[b], 0, 0, true});
    const int32_t n = static_cast<int32_t>(sym.size());
    for (int32_t i = 0; i < n; ++i) {
      sym[i].prev = i - 1;
      sym[i].next = i + 1 < n ? i + 1 : -1;
    }
    struct Cand {
      int32_t rank, pos, new_id;
      bool operator<(const Cand& o) const {  // std::priority_queue pops the largest: invert
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    auto lookup = [&](int32_t a, int32_t b) -> const Merge* {
      auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
      return it == merges_.end() ? nullptr : &it->second;
    };
    std::vector<Cand> init;
    init.reserve(n);
    for (int32_t i = 0; i + 1 < n; ++i)
      if (const Merge* m = lookup(sym[i].c, sym[i + 1].c)) init.push_back({m->rank, i, m->new_id});
    std::priority_queue<Cand> q(std::less<Cand>(), std::move(init));
    while (!q.empty()) {
      const Cand top = q.top();
      q.pop();
      Sym& cur = sym[top.pos];
      if (!cur.alive || cur.next < 0) continue;
      const int32_t nx = cur.next;
      const Merge* m = lookup(cur.c, sym[nx].c);
      if (!m || m->new_id != top.new_id) continue;  // a stale entry
      cur.c = top.new_id;
      sym[nx].alive = false;
      cur.next = sym[nx].next;
      if (cur.next >= 0) sym[cur.next].prev = top.pos;
      if (cur.prev >= 0)
        if (const Merge* pm = lookup(sym[cur.prev].c, cur.c)) q.push({pm->rank, cur.prev, pm->new_id});
      if (cur.next >= 0)
        if (const Merge* nm = lookup(cur.c, sym[cur.next].c)) q.push({nm->rank, top.pos, nm->new_id});
    }
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) ids.push_back(sym[i].c);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(std::move(key), std::move(ids));
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    MT_CHECK(id >= 0 && id < vocab_size() && id_known_[id], ErrorKind::Data, "token id ", id, " (position ", k,
             ") is not in the tokenizer's vocabulary (", path_, ", ", vocab_size(), " ids)");
    bytes += id_bytes_[id];
  }
  // String::from_utf8_lossy: each maximal invalid prefix becomes U+FFFD.
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  for (size_t i = 0; i < n;) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8_seq(s, n, i, &cp, &bad);
    if (len > 0) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

}  // namespace mt::data
