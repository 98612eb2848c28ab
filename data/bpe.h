// Byte-level BPE tokenizer (GPT-2 / GPT-NeoX family) loaded from a HuggingFace tokenizer.json, producing exactly the
// ids of HuggingFace `tokenizers` (Tokenizer.encode(text).ids, Tokenizer.decode(ids, skip_special_tokens=False)).
//
// Pipeline, as in HF:
//  1. Split the text on the added tokens with "normalized": false (leftmost, longest match); a match is its id.
//  2. NFC-normalize each remaining piece (normalizer "NFC", via utf8proc; or no normalizer).
//  3. Split those pieces on the added tokens with "normalized": true (GPT-NeoX: runs of 2..24 spaces).
//  4. Pre-tokenize each remaining piece with the ByteLevel pre-tokenizer: the GPT-2 regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     (Oniguruma semantics: \s is White_Space, \p{L} / \p{N} the Unicode general categories), then map each byte of
//     a pre-token to its printable byte-level character.
//  5. BPE each pre-token with the ranked merges (lowest rank first, leftmost among equal ranks), cached per word.
// Decoding maps each token back to bytes (ByteLevel decoder) and replaces invalid UTF-8 with U+FFFD as Rust's
// String::from_utf8_lossy does.
//
// Supported tokenizer.json: model BPE without dropout / subword prefix / word suffix; pre_tokenizer ByteLevel
// (add_prefix_space, use_regex); normalizer null or NFC; decoder null or ByteLevel; post_processor null or
// ByteLevel; no truncation / padding; added tokens without lstrip / rstrip / single_word. Anything else is refused
// at load time rather than encoded differently from HF.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mt::data {

class BpeTokenizer {
 public:
  // Errors: mt::Error(Data) naming the file and what is wrong (missing / unreadable file, not JSON with the parser's
  // position, missing model.vocab / model.merges, unsupported model / pre_tokenizer / normalizer / decoder, a merge
  // naming a token that is not in the vocabulary, ...).
  static BpeTokenizer load(const std::string& path);

  // Invalid UTF-8 is mt::Error(Data) "invalid UTF-8 at byte offset N" (callers add file:line). Thread-compatible
  // only: the word cache is mutated (use one tokenizer per thread).
  std::vector<int32_t> encode(std::string_view utf8) const;
  // Token ids back to text; an id outside [0, vocab_size()) is mt::Error(Data).
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(id_bytes_.size()); }  // the largest id + 1
  int32_t eos_id() const { return eos_id_; }         // <|endoftext|>; -1 when the file has none
  int32_t token_id(const std::string& token) const;  // a vocabulary / added token's id, or -1
  // Bytes a token decodes to (0 for an id outside [0, vocab_size()) or without a token).
  size_t token_byte_length(int32_t id) const {
    return id >= 0 && id < vocab_size() ? id_bytes_[static_cast<size_t>(id)].size() : 0;
  }
  const std::string& path() const { return path_; }
  size_t cache_size() const { return cache_.size(); }

 private:
  struct Trie {  // byte trie over added-token contents for leftmost-longest matching
    std::vector<std::array<int32_t, 256>> next;
    std::vector<int32_t> id;  // the token ending at a node, or -1
    bool empty() const { return next.size() <= 1; }
  };
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  static void trie_add(Trie& t, const std::string& s, int32_t id);
  // Appends ids for `text`: pieces between matches of `t` go to `rest`.
  template <typename Rest>
  void split_added(const Trie& t, std::string_view text, std::vector<int32_t>& out, Rest&& rest) const;
  void encode_normalized(std::string_view piece, std::vector<int32_t>& out) const;
  void pretokenize_and_bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;

  std::string path_;
  std::unordered_map<std::string, int32_t> vocab_;  // token string (byte-level chars) -> id
  std::unordered_map<std::string, int32_t> added_;  // added token content -> id
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> rank, merged id
  std::vector<std::string> id_bytes_;               // id -> decoded bytes
  std::vector<uint8_t> id_known_;                   // 1 where an id has a token
  int32_t byte_id_[256] = {};                       // byte -> id of its byte-level character
  Trie raw_trie_, norm_trie_;                       // added tokens matched before / after normalization
  bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true, ignore_merges_ = false;
  int32_t eos_id_ = -1;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // pre-token bytes -> ids
};

}  // namespace mt::data
