// Binary token shards: tokenized corpora that training memory-maps (written by `mamba-train prepare`).
//
// File format, version 1 (all integers little-endian; the header is 128 bytes, the payload follows at offset 128):
//   offset  size  field
//        0     8  magic "MTTOKSH1"
//        8     4  u32 format version (1)
//       12     4  u32 dtype code = bytes per token: 1 (u8), 2 (u16) or 4 (u32); the smallest that holds vocab_size ids
//       16     4  u32 vocab_size: every token id is < vocab_size
//       20     4  u32 eod_id: the end-of-document token, or 0xFFFFFFFF when the tokenizer has none (byte)
//       24     8  u64 num_tokens in the payload
//       32     8  u64 num_documents
//       40     8  u64 payload checksum: FNV-1a 64 (data/text_dataset.h fnv1a64) of the payload bytes as stored
//       48    64  tokenizer name, UTF-8, NUL-padded (at least one NUL): "byte", "dna", "bpe:<tokenizer file name>"; the
//                 part before ':' is the tokenizer kind that training checks against tokenizer.kind
//      112     8  reserved, 0
//      120     8  u64 header checksum: FNV-1a 64 of bytes [0, 120)
//      128     -  payload: num_tokens ids of the dtype, num_tokens * dtype bytes, nothing after it
// Documents follow one another; with an end-of-document token each document is followed by it (so a shard of one
// FASTA file holds exactly the tokens TextDataset reads from that file); without one (the byte tokenizer) the
// documents are concatenated as they are, so a byte shard of a file holds exactly the file's bytes. For u8 shards the
// payload checksum is the same FNV-1a 64 that TextDataset's fingerprint uses, so a run started on a file can resume
// on its shard and vice versa.
//
// Reading validates all of it before any token is used: magic, version, header checksum, dtype, vocabulary vs
// dtype, eod id, the payload size (truncation: expected vs actual bytes), the payload checksum and every id
// (< vocab_size; the first offending offset is reported). Every problem is mt::Error(Data) "token shard '<path>':
// <problem>". Hosts are little-endian (checked at compile time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mt::data {

constexpr char kShardMagic[9] = "MTTOKSH1";
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 128;
constexpr size_t kShardTokenizerBytes = 64;  // the name field, NUL included
constexpr uint32_t kShardNoEod = 0xFFFFFFFFu;

struct ShardInfo {
  uint32_t version = kShardVersion;
  uint32_t dtype_bytes = 1;  // 1, 2 or 4
  uint32_t vocab_size = 0;
  uint32_t eod_id = kShardNoEod;
  uint64_t num_tokens = 0;
  uint64_t num_documents = 0;
  uint64_t payload_fnv1a64 = 0;
  std::string tokenizer;
  std::string tokenizer_kind() const { return tokenizer.substr(0, tokenizer.find(':')); }
};

// Bytes per token of the smallest dtype that holds ids 0 .. vocab_size - 1 (1, 2 or 4).
uint32_t shard_dtype_for_vocab(uint64_t vocab_size);
// "u8" / "u16" / "u32".
std::string shard_dtype_name(uint32_t dtype_bytes);

// The 128 header bytes of `info` (checksum filled in), and their inverse with every header check (magic, version,
// header checksum, dtype, vocabulary, eod, tokenizer field). `path` names the file in messages.
std::vector<uint8_t> encode_shard_header(const ShardInfo& info);
ShardInfo decode_shard_header(const uint8_t* bytes, size_t n, const std::string& path);

// True when `path` is a regular file that starts with the shard magic. Never throws.
bool is_token_shard(const std::string& path);

// Streams tokens into a new shard: a temp file next to `path` ("<path>.tmp-XXXXXX"), published by finish() with
// fsync + rename + fsync of the directory, so `path` is either the previous file or the complete new one. A writer
// destroyed before finish() removes its temp file. I/O failures are mt::Error(Io) naming the path; an id >= vocab
// is mt::Error(Data).
class TokenShardWriter {
 public:
  TokenShardWriter(std::string path, std::string tokenizer, uint32_t vocab_size, uint32_t eod_id);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  void append(const int32_t* ids, size_t n);
  void append(const uint8_t* ids, size_t n);
  // Appends the end-of-document token (when the shard has one) and counts a document.
  void end_document();
  // Counts a document without writing a token (a document split across shards ends in the next one).
  void count_document() { ++info_.num_documents; }
  // Publishes the shard under `final_path` ("" = the constructor's path). Once only.
  void finish(const std::string& final_path = "");

  uint64_t tokens() const { return info_.num_tokens; }
  uint64_t documents() const { return info_.num_documents; }
  const ShardInfo& info() const { return info_; }

 private:
  void put(uint32_t id);
  void flush();
  std::string path_, tmp_;
  int fd_ = -1;
  ShardInfo info_;
  std::vector<uint8_t> buf_;
  uint64_t hash_;
};

// A validated, read-only memory map of one shard.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const ShardInfo& info() const { return info_; }
  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(info_.num_tokens); }
  int64_t token(int64_t i) const;
  // Tokens [start, start + n) as int64 into out (the caller checks the range).
  void read(int64_t start, int64_t n, int64_t* out) const;
  const uint8_t* payload() const { return payload_; }
  size_t payload_bytes() const { return static_cast<size_t>(info_.num_tokens) * info_.dtype_bytes; }

 private:
  std::string path_;
  ShardInfo info_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* payload_ = nullptr;
};

// The shard files that data.path `path` names: {path} when it is a shard; else, when path does not exist,
// PATH.000.bin, PATH.001.bin, ... up to the first missing number (what `prepare --max-shard-tokens` writes); else
// none. Never throws.
std::vector<std::string> shard_set_paths(const std::string& path);

// Several shards read as one corpus, their payloads concatenated in order. info(): the first shard's header with
// num_tokens / num_documents summed and payload_fnv1a64 the FNV-1a 64 of the concatenated payloads (for one shard,
// its own checksum), so a split corpus has the fingerprint of the unsplit one. The shards must agree on tokenizer,
// vocabulary, eod and dtype (else mt::Error(Data) naming the first that differs).
class TokenShardSet {
 public:
  explicit TokenShardSet(const std::vector<std::string>& paths);
  const ShardInfo& info() const { return info_; }
  int64_t size() const { return static_cast<int64_t>(info_.num_tokens); }
  size_t num_shards() const { return shards_.size(); }
  void read(int64_t start, int64_t n, int64_t* out) const;  // may cross shard boundaries

 private:
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<int64_t> starts_;  // first token of each shard in the concatenation
  ShardInfo info_;
};

}  // namespace mt::data
