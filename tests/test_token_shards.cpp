// Token shards (data/token_shards.h) and `mamba-train prepare`: round trips for each dtype, every corruption the
// reader must name, the CLI on FASTA and text, training from a shard equal to training from the file.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "data/text_dataset.h"
#include "data/token_shards.h"
#include "test_util.h"

using namespace mt;
using namespace mt::data;
using test::contains;
using test::run_cli;

namespace {

using test::read_bytes;
using test::write_bytes;

// The message of the mt::Error(Data) that f throws ("" when it throws nothing; other kinds are marked).
std::string data_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Data) return str("[kind ", static_cast<int>(e.kind()), "] ", e.what());
    return e.what();
  }
  return "";
}

uint64_t get64(const std::string& b, size_t off) {
  uint64_t v;
  std::memcpy(&v, b.data() + off, 8);
  return v;
}
void put32(std::string& b, size_t off, uint32_t v) { std::memcpy(&b[off], &v, 4); }
void put64(std::string& b, size_t off, uint64_t v) { std::memcpy(&b[off], &v, 8); }

// Recompute the checksums after a deliberate edit, so that the check behind them is what fails.
void fix_payload_checksum(std::string& b) {
  put64(b, 40, fnv1a64(reinterpret_cast<const uint8_t*>(b.data()) + 128, b.size() - 128));
}
void fix_header_checksum(std::string& b) { put64(b, 120, fnv1a64(reinterpret_cast<const uint8_t*>(b.data()), 120)); }

// A shard of `docs` (each followed by eod) with the given vocabulary; returns its path.
std::string make_shard(const std::string& path, uint32_t vocab, uint32_t eod,
                       const std::vector<std::vector<int32_t>>& docs, const std::string& tok = "test:x") {
  TokenShardWriter w(path, tok, vocab, eod);
  for (const auto& d : docs) {
    w.append(d.data(), d.size());
    w.end_document();
  }
  w.finish();
  return path;
}

std::vector<int64_t> all_tokens(const TokenShard& s) {
  std::vector<int64_t> v(static_cast<size_t>(s.size()));
  s.read(0, s.size(), v.data());
  return v;
}

std::vector<nlohmann::json> metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The small byte-level LM of test_trainer.cpp, on `data`.
std::string small_lm_args(const std::string& out_dir, const std::string& data, int64_t max_steps) {
  return "train configs/tinyshakespeare.yaml --set run.out_dir=" + out_dir + " --set data.path=" + data +
         " --set model.d_model=32 --set model.n_layer=2 --set data.seq_len=32 --set trainer.micro_batch_size=4"
         " --set trainer.global_batch_size=8 --set scheduler.warmup_steps=2 --set trainer.eval_every=3"
         " --set trainer.eval_batches=2 --set trainer.log_every=1 --set checkpoint.every=3"
         " --set logging.progress=false --set logging.plot=false --set run.device=cpu --set trainer.max_steps=" +
         std::to_string(max_steps);
}

}  // namespace

TEST(TokenShard, RoundTripForEachDtype) {
  const std::string dir = test::temp_dir("shards");
  struct Case {
    uint32_t vocab, dtype;
  };
  for (const Case c : {Case{200, 1}, Case{256, 1}, Case{1000, 2}, Case{65536, 2}, Case{70000, 4}}) {
    SCOPED_TRACE(c.vocab);
    const std::vector<std::vector<int32_t>> docs = {
        {0, 1, static_cast<int32_t>(c.vocab - 1), 7}, {}, {static_cast<int32_t>(c.vocab / 2)}};
    const std::string p = make_shard(dir + "/s.bin", c.vocab, 3, docs, "bpe:demo/tokenizer.json");
    EXPECT_EQ(std::filesystem::file_size(p), 128 + 8 * c.dtype);  // 5 tokens + 3 EOD
    ASSERT_TRUE(is_token_shard(p));
    TokenShard s(p);
    EXPECT_EQ(s.info().dtype_bytes, c.dtype);
    EXPECT_EQ(s.info().vocab_size, c.vocab);
    EXPECT_EQ(s.info().eod_id, 3u);
    EXPECT_EQ(s.info().num_documents, 3u);
    EXPECT_EQ(s.info().tokenizer, "bpe:demo/tokenizer.json");
    EXPECT_EQ(s.info().tokenizer_kind(), "bpe");
    const std::vector<int64_t> want = {0, 1, c.vocab - 1, 7, 3, 3, c.vocab / 2, 3};
    EXPECT_EQ(all_tokens(s), want);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(s.token(static_cast<int64_t>(i)), want[i]);
    const std::string b = read_bytes(p);
    EXPECT_EQ(get64(b, 40), fnv1a64(reinterpret_cast<const uint8_t*>(b.data()) + 128, b.size() - 128));
  }
  // Bytes without an end-of-document token: the payload is the bytes themselves.
  TokenShardWriter w(dir + "/b.bin", "byte", 256, kShardNoEod);
  const std::string text = "hello\nworld\n";
  w.append(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  w.end_document();
  w.finish();
  EXPECT_EQ(read_bytes(dir + "/b.bin").substr(128), text);
  TokenShard s(dir + "/b.bin");
  EXPECT_EQ(s.info().eod_id, kShardNoEod);
  EXPECT_EQ(s.size(), 12);
  EXPECT_FALSE(is_token_shard(dir));
  EXPECT_FALSE(is_token_shard(dir + "/none"));
  std::filesystem::remove_all(dir);
}

TEST(TokenShard, EveryCorruptionIsADataErrorNamingFileAndProblem) {
  const std::string dir = test::temp_dir("shards_bad");
  const std::string good = read_bytes(make_shard(dir + "/good.bin", 1000, 1, {{5, 6, 7, 8, 9, 10}, {999, 2}}));
  ASSERT_EQ(good.size(), 128u + 2 * 10);
  const std::string p = dir + "/bad.bin";
  auto error_for = [&](const std::string& bytes) {
    write_bytes(p, bytes);
    return data_error_of([&] { TokenShard s(p); });
  };
  const std::string pre = "token shard '" + p + "': ";
  EXPECT_EQ(error_for(good), "");

  EXPECT_EQ(error_for(""), pre + "empty file (0 bytes), not a mamba-train token shard");
  std::string b = good;
  b[3] = 'X';
  EXPECT_EQ(error_for(b), pre + "not a mamba-train token shard (the file does not start with \"MTTOKSH1\")");
  EXPECT_EQ(error_for("hello world, a plain text file\n"),
            pre + "not a mamba-train token shard (the file does not start with \"MTTOKSH1\")");

  b = good;
  put32(b, 8, 2);
  EXPECT_EQ(error_for(b), pre + "unsupported format version 2 (this build reads version 1)");
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "unsupported format version 2 (this build reads version 1)");

  b = good;
  b[33] ^= 0x10;  // num_documents
  EXPECT_TRUE(contains(error_for(b), pre + "header checksum mismatch (stored ")) << error_for(b);
  EXPECT_TRUE(contains(error_for(b), "): the header is corrupt"));

  b = good;
  put32(b, 12, 3);
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "bad dtype code 3 (expected 1 = u8, 2 = u16 or 4 = u32)");
  b = good;
  put32(b, 16, 70000);
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "vocabulary size 70000 does not fit dtype u16");
  b = good;
  put32(b, 20, 1000);
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "end-of-document id 1000 is outside the vocabulary of 1000");
  b = good;
  std::memset(&b[48], 'a', 64);
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "the tokenizer name field is not NUL-terminated");

  // Truncation at several points: inside the magic, inside the header, right after it, inside the payload.
  EXPECT_EQ(error_for(good.substr(0, 5)), pre + "truncated header: the file has 5 bytes, the header alone needs 128");
  EXPECT_EQ(error_for(good.substr(0, 100)),
            pre + "truncated header: the file has 100 bytes, the header alone needs 128");
  EXPECT_EQ(error_for(good.substr(0, 128)), pre + "truncated payload: expected 20 bytes (10 tokens of u16), found 0");
  EXPECT_EQ(error_for(good.substr(0, 139)), pre + "truncated payload: expected 20 bytes (10 tokens of u16), found 11");
  EXPECT_EQ(error_for(good.substr(0, 147)), pre + "truncated payload: expected 20 bytes (10 tokens of u16), found 19");
  EXPECT_EQ(
      error_for(good + "x"),
      pre + "payload size mismatch: expected 20 bytes (10 tokens of u16), found 21 (1 bytes after the last token)");
  b = good;
  put64(b, 24, UINT64_MAX / 2 + 1);  // a token count whose byte size overflows
  fix_header_checksum(b);
  EXPECT_TRUE(contains(error_for(b), pre + "truncated payload: expected more than")) << error_for(b);

  b = good;
  b[128 + 7] ^= 0x01;
  EXPECT_TRUE(contains(error_for(b), pre + "payload checksum mismatch (stored ")) << error_for(b);
  EXPECT_TRUE(contains(error_for(b), "): the token data is corrupt"));

  b = good;
  const uint16_t big = 1000;
  std::memcpy(&b[128 + 2 * 3], &big, 2);
  fix_payload_checksum(b);
  fix_header_checksum(b);
  EXPECT_EQ(error_for(b), pre + "token id 1000 at token offset 3 (byte offset 134) is outside the vocabulary of 1000");

  EXPECT_EQ(data_error_of([&] { TokenShard s(dir + "/missing.bin"); }),
            "token shard '" + dir + "/missing.bin': cannot open: No such file or directory");
  EXPECT_EQ(data_error_of([&] { TokenShard s(dir); }), "token shard '" + dir + "': not a regular file");
  std::filesystem::remove_all(dir);
}

TEST(TokenShard, WriterPublishesAtomicallyAndChecksIds) {
  const std::string dir = test::temp_dir("shards_w");
  const std::string p = dir + "/s.bin";
  write_bytes(p, "previous");
  {
    TokenShardWriter w(p, "dna", 7, 1);
    const int32_t ids[] = {2, 3, 4};
    w.append(ids, 3);
    EXPECT_EQ(read_bytes(p), "previous");  // untouched until finish()
    const int32_t bad[] = {2, 7};
    EXPECT_EQ(data_error_of([&] { w.append(bad, 2); }),
              p + ": token id 7 at token offset 4 is outside the vocabulary of 7");
  }  // destroyed without finish: the temp file is gone, the old file stays
  EXPECT_EQ(read_bytes(p), "previous");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 1);
  {
    TokenShardWriter w(p, "dna", 7, 1);
    const int32_t ids[] = {2, 3, 4};
    w.append(ids, 3);
    w.end_document();
    w.finish();
  }
  EXPECT_EQ(TokenShard(p).size(), 4);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 1);
  std::filesystem::remove_all(dir);
}

TEST(TokenShard, TextDatasetReadsAShardLikeTheFileItHolds) {
  const std::string dir = test::temp_dir("shards_td");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "line " + std::to_string(i * 7919 % 1000) + " of a small corpus\n";
  write_bytes(dir + "/t.txt", text);
  {
    TokenShardWriter w(dir + "/t.bin", "byte", 256, kShardNoEod);
    w.append(reinterpret_cast<const uint8_t*>(text.data()), text.size());
    w.finish();
  }
  TextDataset f(dir + "/t.txt", 0.1, 16), s(dir + "/t.bin", 0.1, 16);
  EXPECT_TRUE(s.from_shard());
  EXPECT_FALSE(f.from_shard());
  EXPECT_EQ(s.fingerprint(), f.fingerprint());  // a run on the file can resume on its shard
  EXPECT_EQ(s.size(), f.size());
  EXPECT_EQ(s.num_val_windows(), f.num_val_windows());
  for (int64_t first : {0, 5, 1000}) {
    EXPECT_EQ(s.train_batch(42, first, 4).ids.to_vector_i64(), f.train_batch(42, first, 4).ids.to_vector_i64());
  }
  for (int64_t k = 0; k < f.num_val_batches(3); ++k) {
    EXPECT_EQ(s.val_batch(k, 3).ids.to_vector_i64(), f.val_batch(k, 3).ids.to_vector_i64());
    EXPECT_EQ(s.val_batch(k, 3).targets.to_vector_i64(), f.val_batch(k, 3).targets.to_vector_i64());
  }
  // The shard's tokenizer must be the config's.
  try {
    TextDataset(dir + "/t.bin", 0.1, 16, "dna");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_EQ(std::string(e.what()), "tokenizer.kind: dna, but data.path '" + dir +
                                         "/t.bin' is a token shard of the byte tokenizer (set tokenizer.kind: byte)");
  }
  // Too small: the message counts tokens.
  EXPECT_TRUE(contains(data_error_of([&] { TextDataset(dir + "/t.bin", 0.5, 100000); }),
                       "' has " + std::to_string(text.size()) + " tokens, too small for data.seq_len 100000"));
  // A u16 shard: ids above 255 reach the batches.
  make_shard(dir + "/w.bin", 1000, 0, {{999, 500, 256, 1, 2, 3, 4, 5, 6, 7}}, "bpe:x");
  TextDataset w(dir + "/w.bin", 0.0, 11, "bpe");
  EXPECT_EQ(w.vocab_size(), 1000);
  EXPECT_EQ(w.train_batch(1, 0, 1).ids.to_vector_i64(), (std::vector<int64_t>{999, 500, 256, 1, 2, 3, 4, 5, 6, 7, 0}));
  std::filesystem::remove_all(dir);
}

TEST(Prepare, FastaAndTextThroughTheCli) {
  const std::string dir = test::temp_dir("prepare");
  write_bytes(dir + "/g.fa", ">chr1 first\nACGTacgt\r\nNNRY\n>empty\n>chr2\nGGCC\n");
  ASSERT_EQ(std::system(("gzip -c " + dir + "/g.fa > " + dir + "/g.fa.gz").c_str()), 0);
  test::CliResult r = run_cli("prepare --tokenizer dna --input " + dir + "/g.fa.gz --output " + dir + "/g.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 18 tokens, 2 documents in 1 shard from")) << r.out;
  EXPECT_TRUE(contains(r.out, "MB/s of input files, ")) << r.out;
  {
    TokenShard s(dir + "/g.bin");
    EXPECT_EQ(s.info().tokenizer, "dna");
    EXPECT_EQ(s.info().vocab_size, 7u);
    EXPECT_EQ(s.info().eod_id, static_cast<uint32_t>(kDnaEod));
    EXPECT_EQ(s.info().num_documents, 2u);
    const std::vector<int64_t> want = {2, 3, 4, 5, 2, 3, 4, 5, 6, 6, 6, 6, 1, 4, 4, 3, 3, 1};
    EXPECT_EQ(all_tokens(s), want);
    // The same tokens, batches and fingerprint as TextDataset reading the FASTA file itself.
    TextDataset a(dir + "/g.fa", 0.0, 4, "dna"), b(dir + "/g.bin", 0.0, 4, "dna");
    EXPECT_EQ(a.fingerprint(), b.fingerprint());
    EXPECT_EQ(a.train_batch(3, 0, 16).ids.to_vector_i64(), b.train_batch(3, 0, 16).ids.to_vector_i64());
  }

  // Text: two files, a document per line, split into shards of 10 tokens.
  write_bytes(dir + "/a.txt", "first line\nsecond\n");
  write_bytes(dir + "/b.txt", "third, no newline");
  r = run_cli("prepare --tokenizer byte --doc-per-line --input " + dir + "/a.txt --input " + dir + "/b.txt --output " +
              dir + "/t --max-shard-tokens 10");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 35 tokens, 3 documents in 4 shards")) << r.out;
  std::string joined;
  uint64_t docs = 0;
  for (const char* n : {".000.bin", ".001.bin", ".002.bin", ".003.bin"}) {
    const std::string p = dir + "/t" + n;
    TokenShard s(p);
    EXPECT_EQ(s.size(), std::string(n) == ".003.bin" ? 5 : 10) << p;
    docs += s.info().num_documents;
    joined += read_bytes(p).substr(128);
  }
  EXPECT_EQ(joined, "first line\nsecond\nthird, no newline");
  EXPECT_EQ(docs, 3u);
  EXPECT_FALSE(std::filesystem::exists(dir + "/t"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/t.004.bin"));

  // Without --max-shard-tokens: one shard at the path, the files' bytes as they are.
  r = run_cli("prepare --tokenizer byte --input " + dir + "/a.txt --input " + dir + "/b.txt --output " + dir + "/one");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 35 tokens, 2 documents in 1 shard")) << r.out;
  EXPECT_EQ(read_bytes(dir + "/one").substr(128), joined);

  // The split set read as one corpus: the tokens, windows (across shard boundaries) and fingerprint of the whole.
  write_bytes(dir + "/joined.txt", joined);
  EXPECT_EQ(shard_set_paths(dir + "/t").size(), 4u);
  EXPECT_EQ(shard_set_paths(dir + "/one"), std::vector<std::string>{dir + "/one"});
  EXPECT_TRUE(shard_set_paths(dir + "/a.txt").empty());
  EXPECT_TRUE(shard_set_paths(dir + "/nothing").empty());
  {
    TextDataset split(dir + "/t", 0.25, 8), one(dir + "/one", 0.25, 8), file(dir + "/joined.txt", 0.25, 8);
    EXPECT_TRUE(split.from_shard());
    EXPECT_EQ(split.fingerprint(), file.fingerprint());
    EXPECT_EQ(one.fingerprint(), file.fingerprint());
    EXPECT_EQ(split.train_batch(7, 0, 64).ids.to_vector_i64(), file.train_batch(7, 0, 64).ids.to_vector_i64());
    EXPECT_EQ(split.val_batch(0, 2).ids.to_vector_i64(), file.val_batch(0, 2).ids.to_vector_i64());
    TokenShardSet set(shard_set_paths(dir + "/t"));
    EXPECT_EQ(set.num_shards(), 4u);
    EXPECT_EQ(set.info().num_documents, 3u);
    std::vector<int64_t> all(35);
    set.read(0, 35, all.data());
    EXPECT_EQ(std::string(all.begin(), all.end()), joined);
  }
  // Shards that do not belong together are refused.
  make_shard(dir + "/m.001.bin", 1000, 1, {{5}});
  std::filesystem::copy_file(dir + "/t.000.bin", dir + "/m.000.bin");
  EXPECT_TRUE(contains(data_error_of([&] { TextDataset(dir + "/m", 0.0, 2); }),
                       "token shard '" + dir + "/m.001.bin': does not belong with '" + dir + "/m.000.bin'"));
  // Writing PATH again as one shard removes the split set of the earlier run (training would read PATH only, but a
  // stale set is a trap), and a shorter split removes the shards after its last.
  r = run_cli("prepare --tokenizer byte --input " + dir + "/a.txt --output " + dir + "/t --max-shard-tokens 10");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "removed " + dir + "/t.002.bin (a shard of an earlier run)")) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/t.001.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/t.002.bin") || std::filesystem::exists(dir + "/t.003.bin"));
  r = run_cli("prepare --tokenizer byte --input " + dir + "/a.txt --output " + dir + "/t");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/t.000.bin") || std::filesystem::exists(dir + "/t.001.bin"));
  EXPECT_EQ(TokenShard(dir + "/t").size(), 18);
  std::filesystem::remove_all(dir);
}

TEST(Prepare, BpeShardHoldsTheTokenizersIds) {
  const std::string tj = std::string(MT_SOURCE_DIR) + "/data/tokenizers/gpt-neox-20b/tokenizer.json";
  ASSERT_TRUE(std::filesystem::exists(tj));
  const std::string dir = test::temp_dir("prepare_bpe");
  write_bytes(dir + "/a.txt", "Hello world!\nA second line.\n");
  test::CliResult r = run_cli("prepare --tokenizer bpe --tokenizer-path " + tj + " --doc-per-line --input " + dir +
                              "/a.txt --output " + dir + "/a.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  const BpeTokenizer bpe = BpeTokenizer::load(tj);
  std::vector<int64_t> want;
  for (const char* line : {"Hello world!\n", "A second line.\n"}) {
    for (int32_t id : bpe.encode(line)) want.push_back(id);
    want.push_back(bpe.eos_id());
  }
  TokenShard s(dir + "/a.bin");
  EXPECT_EQ(all_tokens(s), want);
  EXPECT_EQ(s.info().dtype_bytes, 2u);
  EXPECT_EQ(s.info().vocab_size, static_cast<uint32_t>(bpe.vocab_size()));
  EXPECT_EQ(s.info().eod_id, static_cast<uint32_t>(bpe.eos_id()));
  EXPECT_EQ(s.info().tokenizer, "bpe:gpt-neox-20b/tokenizer.json");
  EXPECT_EQ(s.info().num_documents, 2u);
  std::filesystem::remove_all(dir);
}

TEST(Prepare, BadArgumentsAreOneClearErrorAndNonzeroExit) {
  const std::string dir = test::temp_dir("prepare_args");
  write_bytes(dir + "/a.txt", "abc\n");
  write_bytes(dir + "/bad.fa", ">r\nACGT\nACUT\n");
  write_bytes(dir + "/empty.txt", "");
  write_bytes(dir + "/keep.txt", "not a shard\n");
  const std::string in = " --input " + dir + "/a.txt";
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"prepare" + in + " --output " + dir + "/o", 2, "--tokenizer is required"},
      {"prepare --tokenizer wordpiece" + in + " --output " + dir + "/o", 2,
       "--tokenizer: wordpiece not in {bpe,byte,dna}"},
      {"prepare --tokenizer byte --output " + dir + "/o", 2, "--input is required"},
      {"prepare --tokenizer byte" + in, 2, "--output is required"},
      {"prepare --tokenizer byte --input " + dir + "/nope.txt --output " + dir + "/o", 2, "File does not exist"},
      {"prepare --tokenizer byte" + in + " --output " + dir + "/o --max-shard-tokens 0", 2, "--max-shard-tokens"},
      {"prepare --tokenizer dna --doc-per-line" + in + " --output " + dir + "/o", 2,
       "prepare: --doc-per-line applies to text tokenizers (byte, bpe); the documents of dna are the FASTA records"},
      {"prepare --tokenizer byte --tokenizer-path x.json" + in + " --output " + dir + "/o", 2,
       "prepare: --tokenizer-path applies to --tokenizer bpe only"},
      {"prepare --tokenizer bpe" + in + " --output " + dir + "/o", 2,
       "prepare: --tokenizer bpe needs --tokenizer-path"},
      {"prepare --tokenizer byte" + in + " --output " + dir, 2, "' is a directory; give a file path"},
      {"prepare --tokenizer byte" + in + " --output " + dir + "/no/such/o", 2, "': no such directory '"},
      {"prepare --tokenizer byte" + in + " --output " + dir + "/a.txt", 2, "' is also an --input"},
      {"prepare --tokenizer dna --input " + dir + "/bad.fa --output " + dir + "/o", 4,
       "--input: " + dir + "/bad.fa:3:3: 'U' is not a DNA letter"},
      {"prepare --tokenizer byte" + in + " --output " + dir + "/keep.txt", 2,
       "prepare: '" + dir + "/keep.txt' exists and is not a token shard; not overwriting it"},
      {"prepare --tokenizer byte --input " + dir + "/empty.txt --output " + dir + "/o", 4,
       "prepare: the inputs hold no tokens (empty files?)"},
  };
  for (const Case& c : cases) {
    const test::CliResult r = run_cli(c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, c.message)) << c.args << "\n" << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/o"));  // nothing published by a failed run
  EXPECT_EQ(read_bytes(dir + "/a.txt"), "abc\n");
  EXPECT_EQ(read_bytes(dir + "/keep.txt"), "not a shard\n");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 4);
  std::filesystem::remove_all(dir);
}

TEST(Prepare, TrainingFromAShardEqualsTrainingFromTheFile) {
  // The byte tokenizer: a shard of the corpus holds its bytes, so the losses (train and eval) are bit-identical, and
  // a run started on the file resumes on the shard (same fingerprint) to the same end.
  const std::string dir = test::temp_dir("prepare_train");
  const std::string corpus = "data/corpora/tinyshakespeare.txt";
  test::CliResult r = run_cli("prepare --tokenizer byte --input " + corpus + " --output " + dir + "/ts.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir + "/file", corpus, 6));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir + "/shard", dir + "/ts.bin", 6));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<nlohmann::json> a = metrics(dir + "/file/metrics.jsonl"), b = metrics(dir + "/shard/metrics.jsonl");
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (const char* k : {"loss", "grad_norm", "samples_seen"}) {
      if (!a[i].contains(k)) continue;
      EXPECT_EQ(a[i][k], b[i][k]) << i << " " << k;
      ++compared;
    }
    if (a[i].contains("eval")) {
      EXPECT_EQ(a[i]["eval"]["loss"], b[i]["eval"]["loss"]) << i;
      ++compared;
    }
  }
  EXPECT_GE(compared, 6 * 3 + 2);

  // The same from the corpus split into shards of 300000 tokens (data.path names the set).
  r = run_cli("prepare --tokenizer byte --input " + corpus + " --output " + dir + "/split --max-shard-tokens 300000");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, " in 4 shards")) << r.out;
  r = run_cli(small_lm_args(dir + "/split_run", dir + "/split", 6));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<nlohmann::json> c = metrics(dir + "/split_run/metrics.jsonl");
  ASSERT_EQ(c.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].contains("loss")) {
      EXPECT_EQ(a[i]["loss"], c[i]["loss"]) << i;
    }
    if (a[i].contains("eval")) {
      EXPECT_EQ(a[i]["eval"]["loss"], c[i]["eval"]["loss"]) << i;
    }
  }

  // Stop on the file at step 3 (a checkpoint), resume on the shard to step 6: the last losses equal the straight run.
  r = run_cli(small_lm_args(dir + "/mixed", corpus, 6) + " --stop-at-step 3");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir + "/mixed", dir + "/ts.bin", 6));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "resumed from ")) << r.out;
  EXPECT_TRUE(contains(r.out, " at step 3 (24 samples seen)")) << r.out;
  const std::vector<nlohmann::json> m = metrics(dir + "/mixed/metrics.jsonl");
  ASSERT_FALSE(m.empty());
  ASSERT_TRUE(m.back().contains("eval")) << m.back().dump();
  ASSERT_TRUE(a.back().contains("eval")) << a.back().dump();
  EXPECT_EQ(m.back()["eval"]["loss"], a.back()["eval"]["loss"]);

  // A shard of another tokenizer is refused by name.
  write_bytes(dir + "/g.fa", ">r\n" + std::string(200, 'A') + "\n");
  r = run_cli("prepare --tokenizer dna --input " + dir + "/g.fa --output " + dir + "/g.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(small_lm_args(dir + "/dna", dir + "/g.bin", 3));
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "is a token shard of the dna tokenizer (set tokenizer.kind: dna)")) << r.out;
  // A shard whose ids do not fit the model's embedding is refused before training.
  make_shard(dir + "/wide.bin", 1000, 0, {std::vector<int32_t>(2000, 999)}, "byte");
  r = run_cli(small_lm_args(dir + "/wide", dir + "/wide.bin", 3));
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(
      r.out, "model.vocab_size: 256 is smaller than the vocabulary of data.path '" + dir + "/wide.bin' (1000 ids)"))
      << r.out;
  // A corrupt shard is a data error naming it.
  std::string bytes = read_bytes(dir + "/ts.bin");
  bytes[5000] ^= 0x20;
  write_bytes(dir + "/ts.bin", bytes);
  r = run_cli(small_lm_args(dir + "/corrupt", dir + "/ts.bin", 3));
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "token shard '" + dir + "/ts.bin': payload checksum mismatch")) << r.out;
  std::filesystem::remove_all(dir);
}
