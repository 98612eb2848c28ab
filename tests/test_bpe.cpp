// GPT-NeoX byte-level BPE (data/bpe.h): every line of tests/data/bpe/golden.jsonl (ids and decoded text from
// HuggingFace tokenizers, tools/bpe_golden.py) reproduced exactly; hand-checked cases; bad tokenizer.json files and
// invalid UTF-8 refused with messages that say what is wrong.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "data/bpe.h"
#include "data/text_dataset.h"
#include "train/config/config.h"

using namespace mt;
using namespace mt::data;
using test::contains;

namespace {

const std::string kTokenizer = std::string(MT_SOURCE_DIR) + "/data/tokenizers/gpt-neox-20b/tokenizer.json";

const BpeTokenizer& neox() {
  static const BpeTokenizer t = BpeTokenizer::load(kTokenizer);
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind() == ErrorKind::Data ? std::string(e.what()) : "(wrong kind) " + std::string(e.what());
  }
  return "(no error)";
}

std::string ids_str(const std::vector<int32_t>& v, size_t from, size_t count = 8) {
  std::string s = "[";
  for (size_t i = from; i < v.size() && i < from + count; ++i) s += (i > from ? ", " : "") + std::to_string(v[i]);
  if (from + count < v.size()) s += ", ...";
  return s + "]";
}

std::string write_tmp(const std::string& name, const std::string& content) {
  const std::string path = "/tmp/mt_bpe_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// GPT-2's bytes_to_unicode() character of byte b, as UTF-8.
std::string byte_char(int b) {
  const bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!direct) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF))) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A small valid byte-level tokenizer.json (ids 0..255 the bytes, then "he", "Ġt", "Ġthe", "<eot>"), for the
// bad-file cases to break.
nlohmann::json tiny_tokenizer() {
  nlohmann::json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = nlohmann::json::array({{{"id", 259},
                                              {"content", "<eot>"},
                                              {"special", true},
                                              {"normalized", false},
                                              {"lstrip", false},
                                              {"rstrip", false},
                                              {"single_word", false}}});
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["post_processor"] = {{"type", "ByteLevel"}};
  j["decoder"] = {{"type", "ByteLevel"}};
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["he"] = 256;
  vocab["\xc4\xa0t"] = 257;
  vocab["\xc4\xa0the"] = 258;
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"vocab", vocab},
                {"merges", {"h e", "\xc4\xa0 t", "\xc4\xa0t he"}}};
  return j;
}

std::string load_error(const std::string& name, const std::string& content) {
  const std::string p = write_tmp(name, content);
  const std::string e = error_of([&] { BpeTokenizer::load(p); });
  unlink(p.c_str());
  return e;
}

}  // namespace

TEST(Bpe, LoadsGptNeox) {
  const BpeTokenizer& t = neox();
  EXPECT_EQ(t.vocab_size(), 50281);  // 50254 BPE tokens, 23 space runs, <|im_start|> <|im_end|> assistant RWKV
  EXPECT_EQ(t.eos_id(), 0);
  EXPECT_EQ(t.token_id("<|padding|>"), 1);
  EXPECT_EQ(t.token_id("Ġworld"), 1533);
  EXPECT_EQ(t.token_id("nonexistent-token"), -1);
}

TEST(Bpe, HandCheckedEncodings) {
  const BpeTokenizer& t = neox();
  auto id = [&](const char* tok) {
    const int32_t i = t.token_id(tok);
    EXPECT_GE(i, 0) << tok;
    return i;
  };
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{12092, 1533}));
  EXPECT_EQ(t.encode(""), std::vector<int32_t>{});
  // Contractions, and a space kept in front of the word that follows it.
  EXPECT_EQ(t.encode("I'm"), (std::vector<int32_t>{id("I"), id("'m")}));
  // Added tokens: special ones split out of the text; runs of 2..24 spaces are their own tokens (leftmost longest).
  EXPECT_EQ(t.encode("a<|endoftext|>b"), (std::vector<int32_t>{id("a"), 0, id("b")}));
  EXPECT_EQ(t.encode("a   b"), (std::vector<int32_t>{id("a"), 50275, id("b")}));
  EXPECT_EQ(t.encode(std::string(25, ' ') + "x"), (std::vector<int32_t>{50254, id("Ġx")}));
  EXPECT_EQ(t.encode(std::string(50, ' ')), (std::vector<int32_t>{50254, 50254, 50276}));
  // Whitespace other than spaces: \s+(?!\S) leaves the last one for the next pre-token (which, before a letter, is
  // a lone \s+: the letter is not absorbed as a space would be); at the end the whole run is one pre-token.
  EXPECT_EQ(t.encode("a\n\nb"), (std::vector<int32_t>{id("a"), id("Ċ"), id("Ċ"), id("b")}));
  EXPECT_EQ(t.encode("a\n\n"), (std::vector<int32_t>{id("a"), id("ĊĊ")}));
  EXPECT_EQ(t.encode("a\n b"), (std::vector<int32_t>{id("a"), id("Ċ"), id("Ġb")}));
  // NFC: e + U+0301 composes to é, so both spellings encode alike.
  EXPECT_EQ(t.encode("caf\x65\xcc\x81"), t.encode("caf\xc3\xa9"));
  // Round trip through bytes that are not valid UTF-8 on their own: decode replaces them as from_utf8_lossy does.
  const std::vector<int32_t> emoji = t.encode("\xf0\x9f\x98\x80");
  ASSERT_GE(emoji.size(), 2u);
  EXPECT_EQ(t.decode(emoji), "\xf0\x9f\x98\x80");
  EXPECT_EQ(t.decode({emoji[0]}).substr(0, 3), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({0, 50276}), "<|endoftext|>  ");
  EXPECT_TRUE(contains(error_of([&] { t.decode({50281}); }), "token id 50281 (position 0) is not in"));
  EXPECT_TRUE(contains(error_of([&] { t.decode({-1}); }), "token id -1"));
}

TEST(Bpe, InvalidUtf8GivesTheByteOffset) {
  const BpeTokenizer& t = neox();
  EXPECT_EQ(error_of([&] { t.encode("ok \xff tail"); }), "invalid UTF-8 at byte offset 3 (byte 0xff)");
  EXPECT_EQ(error_of([&] { t.encode("ab\xc3"); }), "invalid UTF-8 at byte offset 2 (byte 0xc3)");        // truncated
  EXPECT_EQ(error_of([&] { t.encode("\xed\xa0\x80"); }), "invalid UTF-8 at byte offset 0 (byte 0xed)");  // surrogate
  EXPECT_EQ(error_of([&] { t.encode("x\xc0\xafy"); }), "invalid UTF-8 at byte offset 1 (byte 0xc0)");    // overlong
}

TEST(Bpe, GoldenIdsFromHuggingFaceTokenizers) {
  const BpeTokenizer& t = neox();
  const std::string path = std::string(MT_SOURCE_DIR) + "/tests/data/bpe/golden.jsonl";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path << " is missing: generate it with `python3 tools/bpe_golden.py golden`";
  std::string line;
  int64_t n = 0, bad = 0, bad_decode = 0;
  while (std::getline(in, line)) {
    ++n;
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string text = j.at("text").get<std::string>();
    const std::vector<int32_t> want = j.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = t.encode(text);
    if (got != want) {
      size_t d = 0;
      while (d < got.size() && d < want.size() && got[d] == want[d]) ++d;
      if (++bad <= 20)
        ADD_FAILURE() << path << ":" << n << ": " << j.at("text").dump() << "\n  first difference at index " << d
                      << ": HF " << ids_str(want, d) << ", ours " << ids_str(got, d) << " (HF " << want.size()
                      << " ids, ours " << got.size() << ")";
    }
    const std::string dec = t.decode(want);
    if (dec != j.at("decoded").get<std::string>() && ++bad_decode <= 20)
      ADD_FAILURE() << path << ":" << n << ": decode differs: HF " << j.at("decoded").dump() << ", ours "
                    << nlohmann::json(dec).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  EXPECT_GE(n, 3000) << path << " has too few lines";
  EXPECT_EQ(bad, 0) << bad << " of " << n << " lines encode differently";
  EXPECT_EQ(bad_decode, 0) << bad_decode << " of " << n << " lines decode differently";
}

TEST(Bpe, TinyTokenizerMergesByRank) {
  const std::string p = write_tmp("tiny.json", tiny_tokenizer().dump());
  const BpeTokenizer t = BpeTokenizer::load(p);
  unlink(p.c_str());
  EXPECT_EQ(t.vocab_size(), 260);
  EXPECT_EQ(t.eos_id(), -1);
  EXPECT_EQ(t.encode(" the"), std::vector<int32_t>{258});
  EXPECT_EQ(t.encode("hehe the<eot>x"), (std::vector<int32_t>{256, 256, 258, 259, 'x'}));
  EXPECT_EQ(t.decode({256, 258, 259}), "he the<eot>");
}

TEST(Bpe, BadTokenizerFilesSayWhatIsWrong) {
  EXPECT_EQ(error_of([] { BpeTokenizer::load("/nonexistent/tokenizer.json"); }),
            "/nonexistent/tokenizer.json: cannot open: No such file or directory");
  std::string e = load_error("notjson.json", "{\"model\": [1, 2,");
  EXPECT_TRUE(contains(e, "notjson.json: not JSON (byte 17): parse error at line 1, column 17: syntax error")) << e;
  e = load_error("array.json", "[1, 2]");
  EXPECT_TRUE(contains(e, "array.json: not a tokenizer.json (the top level is not a JSON object)")) << e;
  nlohmann::json j = tiny_tokenizer();
  j["model"].erase("vocab");
  e = load_error("novocab.json", j.dump());
  EXPECT_TRUE(contains(e, "novocab.json: model.vocab is missing or not an object")) << e;
  j = tiny_tokenizer();
  j["model"].erase("merges");
  e = load_error("nomerges.json", j.dump());
  EXPECT_TRUE(contains(e, "nomerges.json: model.merges is missing or not an array")) << e;
  j = tiny_tokenizer();
  j["model"]["type"] = "WordPiece";
  e = load_error("wordpiece.json", j.dump());
  EXPECT_TRUE(contains(e, "wordpiece.json: model.type 'WordPiece' is not supported (only BPE)")) << e;
  j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  e = load_error("metaspace.json", j.dump());
  EXPECT_TRUE(contains(e, "metaspace.json: pre_tokenizer type 'Metaspace' is not supported (only ByteLevel)")) << e;
  j = tiny_tokenizer();
  j["pre_tokenizer"] = nullptr;
  e = load_error("nopre.json", j.dump());
  EXPECT_TRUE(contains(e, "nopre.json: pre_tokenizer type 'none' is not supported (only ByteLevel)")) << e;
  j = tiny_tokenizer();
  j["normalizer"] = {{"type", "NFKC"}};
  e = load_error("nfkc.json", j.dump());
  EXPECT_TRUE(contains(e, "nfkc.json: normalizer type 'NFKC' is not supported (only NFC or none)")) << e;
  j = tiny_tokenizer();
  j["model"]["merges"].push_back("h zz");
  e = load_error("badmerge.json", j.dump());
  EXPECT_TRUE(contains(e, "badmerge.json: model.merges[3] 'h zz': token 'zz' is not in model.vocab")) << e;
  j = tiny_tokenizer();
  j["model"]["merges"].push_back("t h");  // "th" itself is not a token
  e = load_error("nomerged.json", j.dump());
  EXPECT_TRUE(contains(e, "nomerged.json: model.merges[3] 't h': token 'th' is not in model.vocab")) << e;
  j = tiny_tokenizer();
  j["model"]["merges"].push_back("hethe");
  e = load_error("onetoken.json", j.dump());
  EXPECT_TRUE(contains(e, "model.merges[3] 'hethe' is not two tokens separated by one space")) << e;
  j = tiny_tokenizer();
  j["model"]["dropout"] = 0.1;
  e = load_error("dropout.json", j.dump());
  EXPECT_TRUE(contains(e, "model.dropout is not supported")) << e;
  j = tiny_tokenizer();
  j["added_tokens"][0]["lstrip"] = true;
  e = load_error("lstrip.json", j.dump());
  EXPECT_TRUE(contains(e, "added_tokens[0] ('<eot>'): lstrip is not supported")) << e;
  j = tiny_tokenizer();
  j["model"]["vocab"]["he"] = "x";
  e = load_error("strid.json", j.dump());
  EXPECT_TRUE(contains(e, "model.vocab['he'] is not a non-negative integer id")) << e;
}

TEST(Bpe, OtherAddedTokensAreSplitOutToo) {
  // The shipped file also has <|im_start|> <|im_end|> assistant RWKV (special, not normalized): HF splits them out of
  // any text, mid-word too, before pre-tokenizing (the golden lines do not contain them).
  const BpeTokenizer& t = neox();
  EXPECT_EQ(t.token_id("assistant"), 50279);
  EXPECT_EQ(t.encode("the assistant"), (std::vector<int32_t>{t.token_id("the"), t.token_id("Ġ"), 50279}));
  EXPECT_EQ(t.encode("<|im_start|>RWKV"), (std::vector<int32_t>{50277, 50280}));
  EXPECT_EQ(t.decode({50277, 50279}), "<|im_start|>assistant");
}

TEST(Bpe, BenchTokenizerCommand) {
  const test::CliResult r = test::run_cli("bench tokenizer --repeats 1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "340243 tokens: 0.3050 tokens/byte")) << r.out;  // tinyshakespeare.txt
  EXPECT_TRUE(contains(r.out, "MB/s")) << r.out;
  const test::CliResult bad = test::run_cli("bench tokenizer --tokenizer /nonexistent.json");
  EXPECT_EQ(bad.code, 4) << bad.out;
  EXPECT_TRUE(contains(bad.out, "/nonexistent.json: cannot open")) << bad.out;
}

TEST(Bpe, TextDatasetEncodesTheFileLikeItsShard) {
  const std::string corpus = std::string(MT_SOURCE_DIR) + "/data/corpora/tinyshakespeare.txt";
  TextDataset ds(corpus, 0.1, 64, "bpe", kTokenizer);
  EXPECT_EQ(ds.vocab_size(), 50281);
  EXPECT_EQ(ds.size(), 340244);  // 340243 tokens + <|endoftext|>
  std::ifstream in(corpus, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> want = neox().encode(text);
  want.push_back(neox().eos_id());
  const Batch b = ds.train_batch(7, 3, 2);
  const auto ids = b.ids.to_vector_i64();
  const int64_t start = ds.train_start(7, 3);
  for (int64_t t = 0; t < 64; ++t) ASSERT_EQ(ids[t], want[start + t]) << t;
  const Batch v = ds.val_batch(0, 1);
  EXPECT_EQ(v.ids.to_vector_i64()[0], want[ds.val_start(0)]);
  EXPECT_EQ(ds.fingerprint().rfind("bpe:340244:fnv1a64:", 0), 0u) << ds.fingerprint();
  // `mamba-train prepare --tokenizer bpe` writes the same tokens: the same batches and fingerprint from the shard.
  const std::string dir = test::temp_dir("bpe_shard");
  const test::CliResult r = test::run_cli("prepare --tokenizer bpe --tokenizer-path " + kTokenizer + " --input " +
                                          corpus + " --output " + dir + "/ts.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  TextDataset sh(dir + "/ts.bin", 0.1, 64, "bpe");
  EXPECT_EQ(sh.fingerprint(), ds.fingerprint());
  EXPECT_EQ(sh.train_batch(7, 3, 2).ids.to_vector_i64(), ids);
  std::filesystem::remove_all(dir);
  // Invalid UTF-8 in the corpus names the file and the offset.
  const std::string bad = write_tmp("bad.txt", std::string(200, 'a') + "\xff" + std::string(200, 'b'));
  EXPECT_EQ(error_of([&] { TextDataset(bad, 0.1, 8, "bpe", kTokenizer); }),
            "data.path: '" + bad + "': invalid UTF-8 at byte offset 200 (byte 0xff)");
  unlink(bad.c_str());
}

TEST(Bpe, ConfigTakesTheVocabularyFromTheTokenizer) {
  auto cfg = [](const std::string& extra) {
    return train::load_train_config(
        "data:\n  kind: text\n  path: " + std::string(MT_SOURCE_DIR) + "/data/corpora/tinyshakespeare.txt\n" + extra,
        "cfg.yaml");
  };
  auto config_error = [&](const std::string& extra) {
    try {
      cfg(extra);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string tok = "tokenizer:\n  kind: bpe\n  path: " + kTokenizer + "\n";
  EXPECT_EQ(cfg(tok).model.mamba.vocab_size, 50281);
  EXPECT_EQ(cfg(tok).tokenizer.path, kTokenizer);
  EXPECT_EQ(cfg("tokenizer:\n  kind: byte\n").model.mamba.vocab_size, 256);
  const std::string small = config_error(tok + "model:\n  vocab_size: 50000\n");
  EXPECT_TRUE(contains(small, "model.vocab_size: must be >= 50281 (the bpe tokenizer's vocabulary)")) << small;
  EXPECT_EQ(config_error("tokenizer:\n  kind: bpe\n  path: /nonexistent.json\n"),
            "tokenizer.path: /nonexistent.json: cannot open: No such file or directory");
}
