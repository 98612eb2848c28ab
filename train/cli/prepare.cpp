// mamba-train prepare: tokenize text / FASTA files into binary token shards (data/token_shards.h) that training
// memory-maps (data.path naming a shard).
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>

#include "core/error.h"
#include "core/paths.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "data/gz_reader.h"
#include "data/token_shards.h"
#include "train/cli/commands.h"

namespace mt::train {

namespace {

struct PrepareOptions {
  std::string tokenizer;
  std::string tokenizer_path;
  std::vector<std::string> inputs;
  std::string output;
  int64_t max_shard_tokens = 0;  // 0 = one shard
  bool doc_per_line = false;
};

// The shards of one `prepare` run: PATH when everything fits one shard, else PATH.000.bin, PATH.001.bin, ... of
// max_shard_tokens tokens each (the last may be shorter). A document that crosses a boundary is split; it counts in
// the shard where it ends.
class ShardSet {
 public:
  ShardSet(std::string base, std::string tokenizer, uint32_t vocab, uint32_t eod, uint64_t max_tokens)
      : base_(std::move(base)), tokenizer_(std::move(tokenizer)), vocab_(vocab), eod_(eod), max_(max_tokens) {}

  template <typename T>
  void append(const T* ids, size_t n) {
    while (n > 0) {
      if (!cur_ || (max_ > 0 && cur_->tokens() >= max_)) rotate();
      const size_t k = max_ > 0 ? std::min<uint64_t>(n, max_ - cur_->tokens()) : n;
      cur_->append(ids, k);
      ids += k;
      n -= k;
      tokens_ += k;
    }
  }
  void end_document() {
    if (eod_ != data::kShardNoEod) {
      const int32_t e = static_cast<int32_t>(eod_);
      append(&e, 1);
    }
    if (!cur_) rotate();
    cur_->count_document();
    ++documents_;
  }
  // Publishes the last shard, then removes the shards of an earlier run under the same PATH that training would
  // otherwise read with these (PATH.NNN.bin after the last one written; PATH itself or PATH.000.bin ... when the
  // other form was written). Returns the paths written.
  std::vector<std::string> finish() {
    if (!cur_) rotate();
    const bool split = index_ > 0;
    publish(split ? name(index_) : base_);
    if (split) remove_stale(base_);
    for (int i = split ? index_ + 1 : 0; remove_stale(name(i)); ++i) {
    }
    return written_;
  }
  uint64_t tokens() const { return tokens_; }
  uint64_t documents() const { return documents_; }

 private:
  std::string name(int i) const {
    char b[24];
    std::snprintf(b, sizeof b, ".%03d.bin", i);
    return base_ + b;
  }
  void rotate() {
    if (cur_) {
      publish(name(index_));
      ++index_;
    }
    cur_ = std::make_unique<data::TokenShardWriter>(base_, tokenizer_, vocab_, eod_);
  }
  static bool remove_stale(const std::string& path) {
    if (!data::is_token_shard(path)) return false;
    std::error_code ec;
    std::filesystem::remove(path, ec);
    std::printf("  removed %s (a shard of an earlier run)\n", path.c_str());
    return true;
  }
  void publish(const std::string& path) {
    std::error_code ec;
    MT_CHECK(!std::filesystem::exists(path, ec) || data::is_token_shard(path), ErrorKind::Usage, "prepare: '", path,
             "' exists and is not a token shard; not overwriting it (remove it or choose another --output)");
    cur_->finish(path);
    std::printf(
        "  %s: %llu tokens (%s), %llu documents\n", path.c_str(), static_cast<unsigned long long>(cur_->tokens()),
        data::shard_dtype_name(cur_->info().dtype_bytes).c_str(), static_cast<unsigned long long>(cur_->documents()));
    written_.push_back(path);
  }
  std::string base_, tokenizer_;
  uint32_t vocab_, eod_;
  uint64_t max_;
  std::unique_ptr<data::TokenShardWriter> cur_;
  int index_ = 0;
  uint64_t tokens_ = 0, documents_ = 0;
  std::vector<std::string> written_;
};

// A tokenizer `prepare` can use: its shard header fields and how it turns one input file into documents.
// Adding one = one entry in tokenizers() below.
struct PrepareTokenizer {
  virtual ~PrepareTokenizer() = default;
  virtual std::string name() const = 0;  // the shard's tokenizer field; the part before ':' is the tokenizer.kind
  virtual uint32_t vocab_size() const = 0;
  virtual uint32_t eod_id() const = 0;  // data::kShardNoEod when there is none
  virtual void tokenize(const std::string& path, const PrepareOptions& o, ShardSet& out) const = 0;
};

// Every byte is a token (vocabulary 256, no end-of-document token): a file (gzip-compressed or not) is one document,
// or each line (its '\n' included) with --doc-per-line.
struct BytePrepare : PrepareTokenizer {
  std::string name() const override { return "byte"; }
  uint32_t vocab_size() const override { return 256; }
  uint32_t eod_id() const override { return data::kShardNoEod; }
  void tokenize(const std::string& path, const PrepareOptions& o, ShardSet& out) const override {
    bool open_doc = false;
    data::read_chunks(path, "--input", [&](const char* c, size_t n) {
      const uint8_t* p = reinterpret_cast<const uint8_t*>(c);
      if (!o.doc_per_line) {
        out.append(p, n);
        open_doc = open_doc || n > 0;
        return;
      }
      size_t begin = 0;
      for (size_t i = 0; i < n; ++i) {
        if (p[i] != '\n') continue;
        out.append(p + begin, i + 1 - begin);
        out.end_document();
        open_doc = false;
        begin = i + 1;
      }
      if (begin < n) {
        out.append(p + begin, n - begin);
        open_doc = true;
      }
    });
    if (open_doc) out.end_document();
  }
};

// FASTA (gzip-compressed or not) through data/dna.h: each record is one document, followed by [EOD].
struct DnaPrepare : PrepareTokenizer {
  std::string name() const override { return "dna"; }
  uint32_t vocab_size() const override { return static_cast<uint32_t>(data::kDnaVocab); }
  uint32_t eod_id() const override { return static_cast<uint32_t>(data::kDnaEod); }
  void tokenize(const std::string& path, const PrepareOptions&, ShardSet& out) const override {
    data::read_fasta_dna(
        path, "--input", [&](const uint8_t* ids, size_t n) { out.append(ids, n); }, [&] { out.end_document(); });
  }
};

// Byte-level BPE from a HuggingFace tokenizer.json (data/bpe.h): a file (or a line, with --doc-per-line) is one
// document, followed by <|endoftext|> when the tokenizer has it.
struct BpePrepare : PrepareTokenizer {
  explicit BpePrepare(const std::string& path) : bpe(data::BpeTokenizer::load(path)) {
    // "bpe:<directory>/<file>" (what fits the 63-byte field): enough to tell tokenizers apart in shard headers.
    const std::filesystem::path p(path);
    std::string id = p.parent_path().filename().string();
    id = id.empty() ? p.filename().string() : id + "/" + p.filename().string();
    label = "bpe:" + id.substr(0, data::kShardTokenizerBytes - 5);
  }
  std::string name() const override { return label; }
  uint32_t vocab_size() const override { return static_cast<uint32_t>(bpe.vocab_size()); }
  uint32_t eod_id() const override {
    return bpe.eos_id() < 0 ? data::kShardNoEod : static_cast<uint32_t>(bpe.eos_id());
  }
  void tokenize(const std::string& path, const PrepareOptions& o, ShardSet& out) const override {
    std::string text;
    data::read_chunks(path, "--input", [&](const char* c, size_t n) { text.append(c, n); });
    auto encode = [&](std::string_view piece, int64_t line) {
      std::vector<int32_t> ids;
      try {
        ids = bpe.encode(piece);
      } catch (const Error& e) {
        throw Error(ErrorKind::Data, str("--input: ", path, line > 0 ? str(":", line) : std::string(), ": ", e.what()));
      }
      out.append(ids.data(), ids.size());
      out.end_document();
    };
    if (!o.doc_per_line) {
      if (!text.empty()) encode(text, 0);
      return;
    }
    int64_t line = 1;
    for (size_t begin = 0; begin < text.size(); ++line) {
      const size_t nl = text.find('\n', begin);
      const size_t end = nl == std::string::npos ? text.size() : nl + 1;
      encode(std::string_view(text).substr(begin, end - begin), line);
      begin = end;
    }
  }
  data::BpeTokenizer bpe;
  std::string label;
};

using TokenizerFactory = std::function<std::unique_ptr<PrepareTokenizer>(const PrepareOptions&)>;

const std::map<std::string, TokenizerFactory>& tokenizers() {
  static const std::map<std::string, TokenizerFactory> m = {
      {"byte", [](const PrepareOptions&) { return std::make_unique<BytePrepare>(); }},
      {"dna", [](const PrepareOptions&) { return std::make_unique<DnaPrepare>(); }},
      {"bpe",
       [](const PrepareOptions& o) {
         MT_CHECK(!o.tokenizer_path.empty(), ErrorKind::Usage,
                  "prepare: --tokenizer bpe needs --tokenizer-path (a HuggingFace tokenizer.json, e.g. "
                  "data/tokenizers/gpt-neox-20b/tokenizer.json)");
         return std::make_unique<BpePrepare>(shipped_path(o.tokenizer_path));
       }},
  };
  return m;
}

int run_prepare(const PrepareOptions& o) {
  MT_CHECK(
      !o.doc_per_line || o.tokenizer != "dna", ErrorKind::Usage,
      "prepare: --doc-per-line applies to text tokenizers (byte, bpe); the documents of dna are the FASTA records");
  MT_CHECK(o.tokenizer_path.empty() || o.tokenizer == "bpe", ErrorKind::Usage,
           "prepare: --tokenizer-path applies to --tokenizer bpe only");
  std::error_code ec;
  MT_CHECK(!std::filesystem::is_directory(o.output, ec), ErrorKind::Usage, "prepare: --output '", o.output,
           "' is a directory; give a file path (PATH, or PATH.000.bin ... when --max-shard-tokens splits)");
  const std::filesystem::path parent = std::filesystem::path(o.output).parent_path();
  MT_CHECK(parent.empty() || std::filesystem::is_directory(parent, ec), ErrorKind::Usage, "prepare: --output '",
           o.output, "': no such directory '", parent.string(), "'");
  uint64_t in_bytes = 0;
  for (const std::string& in : o.inputs) {
    MT_CHECK(!std::filesystem::exists(o.output, ec) || !std::filesystem::equivalent(in, o.output, ec), ErrorKind::Usage,
             "prepare: --output '", o.output, "' is also an --input");
    struct stat st;
    MT_CHECK(::stat(in.c_str(), &st) == 0 && S_ISREG(st.st_mode), ErrorKind::Data, "--input: '", in,
             "' is not a readable regular file");
    in_bytes += static_cast<uint64_t>(st.st_size);
  }
  const auto it = tokenizers().find(o.tokenizer);
  MT_CHECK(it != tokenizers().end(), ErrorKind::Usage, "prepare: unknown --tokenizer '", o.tokenizer, "'");
  const std::unique_ptr<PrepareTokenizer> tok = it->second(o);

  const auto t0 = std::chrono::steady_clock::now();
  std::printf("prepare: %zu input file%s, tokenizer %s (vocabulary %u) -> %s\n", o.inputs.size(),
              o.inputs.size() == 1 ? "" : "s", tok->name().c_str(), tok->vocab_size(), o.output.c_str());
  ShardSet out(o.output, tok->name(), tok->vocab_size(), tok->eod_id(), static_cast<uint64_t>(o.max_shard_tokens));
  for (const std::string& in : o.inputs) tok->tokenize(in, o, out);
  MT_CHECK(out.tokens() > 0, ErrorKind::Data, "prepare: the inputs hold no tokens (empty files?)");
  const std::vector<std::string> written = out.finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rate = s > 0 ? 1.0 / s : 0.0;
  std::printf(
      "prepared %llu tokens, %llu documents in %zu shard%s from %.1f MB of input files in %.2f s "
      "(%.1f MB/s of input files, %.1f M tokens/s)\n",
      static_cast<unsigned long long>(out.tokens()), static_cast<unsigned long long>(out.documents()), written.size(),
      written.size() == 1 ? "" : "s", in_bytes / 1e6, s, in_bytes / 1e6 * rate, out.tokens() / 1e6 * rate);
  return 0;
}

}  // namespace

Runner add_prepare_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "prepare", "Tokenize text / FASTA files into binary token shards that training memory-maps (data.path)");
  auto o = std::make_shared<PrepareOptions>();
  std::vector<std::string> names;
  for (const auto& kv : tokenizers()) names.push_back(kv.first);
  cmd->add_option("--tokenizer", o->tokenizer,
                  "byte (each file, or line, is a document) | dna (FASTA records) | bpe (--tokenizer-path)")
      ->required()
      ->check(CLI::IsMember(names));
  cmd->add_option("--tokenizer-path", o->tokenizer_path, "tokenizer file (bpe: a tokenizer.json)");
  cmd->add_option("--input", o->inputs, "input file, plain or gzip-compressed (repeatable; read in order)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--output", o->output,
                  "shard path; with --max-shard-tokens splitting: PATH.000.bin, PATH.001.bin, ...")
      ->required();
  cmd->add_option("--max-shard-tokens", o->max_shard_tokens, "split into shards of at most this many tokens")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  cmd->add_flag("--doc-per-line", o->doc_per_line, "byte / bpe: every line is a document (default: every file)");
  return [o]() { return run_prepare(*o); };
}

}  // namespace mt::train
