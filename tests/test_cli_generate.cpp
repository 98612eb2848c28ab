// The decoding commands end to end on the CPU: generate (byte, DNA and BPE models exported by the library, prompts as
// text or ids, the errors) against the library's own generation, the text codec's streaming, and bench decode.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "nn/generate.h"
#include "nn/hf_io.h"
#include "test_util.h"
#include "train/text_codec.h"

using namespace mt;
using namespace mt::test;

namespace {

std::vector<std::string> lines_starting(const std::string& out, const std::string& prefix) {
  std::vector<std::string> r;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) r.push_back(line);
  return r;
}

const char* kTinyModel = "--set n_layer=2 --set d_model=32 --set vocab_size=64 --device cpu";

struct Out {
  int code;
  std::string out, err;  // stdout and stderr apart
};

// mamba-train <args> from the source root, stdout and stderr captured separately.
Out run_split(const std::string& args, const std::string& dir) {
  const std::string o = dir + "/stdout.txt", e = dir + "/stderr.txt";
  const std::string cmd = "cd '" + std::string(MT_SOURCE_DIR) + "' && " + std::string(MT_BINARY) + " " + args + " > '" +
                          o + "' 2> '" + e + "'";
  const int st = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  return Out{WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(o), slurp(e)};
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// A random language model exported as --hf reads it, with a tokenizer file of `kind`.
std::unique_ptr<nn::MambaLMHeadModel> export_model(const std::string& dir, int64_t vocab, const std::string& kind) {
  auto m = std::make_unique<nn::MambaLMHeadModel>(tiny_config(16, 2, vocab));
  Generator g(11);
  m->init_parameters(g);
  nn::save_hf_model(*m, dir);
  if (kind == "bpe")
    std::filesystem::copy_file(source_path("data/tokenizers/gpt-neox-20b/tokenizer.json"), dir + "/tokenizer.json");
  else
    write_file(dir + "/mamba_tokenizer.json", "{\"kind\": \"" + kind + "\"}\n");
  return m;
}

std::vector<int64_t> library_generate(const nn::MambaLMHeadModel& m, const std::vector<int64_t>& prompt, int64_t n,
                                      int64_t eos) {
  nn::GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 0.0;
  o.eos_token_id = eos;
  return nn::generate(m, Device::cpu(), {prompt}, o)[0];
}

}  // namespace

TEST(CliGenerate, PromptIdsGiveOneLineOfNewIdsPerPrompt) {
  const std::string d = temp_dir("gen_ids");
  auto m = export_model(d + "/hf", 256, "byte");
  write_file(d + "/p.txt", "72 101 108\n10\n1 2 3 4 5 6\n72 101 107\n");
  nn::GenerateOptions o;
  o.max_new_tokens = 7;
  o.sampling.temperature = 0.8;
  o.sampling.top_k = 20;
  o.sampling.seed = 3;
  const std::vector<std::vector<int64_t>> prompts = {{72, 101, 108}, {10}, {1, 2, 3, 4, 5, 6}, {72, 101, 107}};
  const auto want = nn::generate(*m, Device::cpu(), prompts, o);
  Out r = run_split("generate --hf " + d + "/hf --prompt-ids " + d +
                        "/p.txt --max-new-tokens 7 --temperature 0.8 --top-k 20 --seed 3 --device cpu",
                    d);
  ASSERT_EQ(r.code, 0) << r.err;
  std::string expect;
  for (const auto& row : want) {
    ASSERT_EQ(row.size(), 7u);
    for (size_t i = 0; i < row.size(); ++i) expect += (i ? " " : "") + std::to_string(row[i]);
    expect += "\n";
  }
  EXPECT_EQ(r.out, expect);
  EXPECT_TRUE(contains(r.err, "generate: 4 prompts, 28 new tokens")) << r.err;
  // Greedy in f64: the same tokens as the library's.
  r = run_split("generate --hf " + d + "/hf --prompt-ids " + d +
                    "/p.txt --max-new-tokens 3 --temperature 0 --dtype f64 "
                    "--device cpu",
                d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines_starting(r.out, "").size(), 4u) << r.out;
  std::filesystem::remove_all(d);
}

TEST(CliGenerate, PromptTextStreamsTheContinuationOfByteDnaAndBpeModels) {
  const std::string d = temp_dir("gen_text");
  // Byte model: no end-of-sequence token, so exactly --max-new-tokens bytes follow the prompt.
  auto byte_model = export_model(d + "/byte", 256, "byte");
  const std::string prompt = "To be, or not";
  std::vector<int64_t> ids;
  for (unsigned char c : prompt) ids.push_back(c);
  std::string expect = prompt;
  for (int64_t t : library_generate(*byte_model, ids, 9, -1)) expect += static_cast<char>(t);
  Out r = run_split("generate --hf " + d + "/byte --prompt '" + prompt +
                        "' --max-new-tokens 9 --temperature 0 "
                        "--device cpu",
                    d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, expect + "\n");
  // DNA model: letters; [EOD] (id 1) ends the row.
  auto dna_model = export_model(d + "/dna", 8, "dna");
  const std::vector<int64_t> dna_ids = {2, 3, 4, 5, 2, 2};  // ACGTAA
  expect = "ACGTAA";
  for (int64_t t : library_generate(*dna_model, dna_ids, 20, 1))
    if (const char c = data::dna_letter(t)) expect += c;
  r = run_split("generate --hf " + d + "/dna --prompt acgtaa --max-new-tokens 20 --temperature 0 --device cpu", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "acgtaa" + expect.substr(6) + "\n");
  // BPE model (the GPT-NeoX tokenizer, vocabulary padded to 50280): the decoded ids up to <|endoftext|>.
  auto bpe_model = export_model(d + "/bpe", 50280, "bpe");
  const data::BpeTokenizer tok = data::BpeTokenizer::load(d + "/bpe/tokenizer.json");
  std::vector<int64_t> bpe_ids;
  for (int32_t id : tok.encode("Hello, world")) bpe_ids.push_back(id);
  std::vector<int32_t> gen;
  for (int64_t t : library_generate(*bpe_model, bpe_ids, 12, tok.eos_id()))
    if (t < tok.vocab_size()) gen.push_back(static_cast<int32_t>(t));
  r = run_split("generate --hf " + d + "/bpe --prompt 'Hello, world' --max-new-tokens 12 --temperature 0 --device cpu",
                d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello, world" + tok.decode(gen) + "\n");
  std::filesystem::remove_all(d);
}

TEST(CliGenerate, TheTextCodecStreamsMultiByteCharactersWhole) {
  train::TrainConfig c;
  c.tokenizer.kind = "bpe";
  c.tokenizer.path = source_path("data/tokenizers/gpt-neox-20b/tokenizer.json");
  train::TextCodec codec(c);
  const std::string text = "naïve café — 東京 ✓ 🙂 ok";
  const std::vector<int64_t> ids = codec.encode(text);
  std::string streamed;
  for (int64_t id : ids) {
    const std::string piece = codec.feed({id});
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a replacement character was streamed";
    streamed += piece;
  }
  streamed += codec.finish();
  EXPECT_EQ(streamed, text);
  // An unfinished character at the end comes out as U+FFFD from finish().
  const std::vector<int64_t> partial = codec.encode("🙂");
  ASSERT_GE(partial.size(), 2u) << "the emoji should span several byte-level tokens";
  EXPECT_EQ(codec.feed({partial[0]}), "");
  EXPECT_EQ(codec.finish(), "\xEF\xBF\xBD");
  // Ids past the tokenizer's vocabulary (a padded model vocabulary) have no text.
  EXPECT_EQ(codec.feed({int64_t{1} << 20}) + codec.finish(), "");
  train::TrainConfig dna;
  dna.tokenizer.kind = "dna";
  train::TextCodec dc(dna);
  EXPECT_EQ(dc.encode("AcgTN"), (std::vector<int64_t>{2, 3, 4, 5, 6}));
  EXPECT_EQ(dc.feed({2, 0, 1, 6, 7, 5}), "ANT");
  EXPECT_EQ(dc.eos(), 1);
  EXPECT_NE(error_of([&] { dc.encode("ACGU"); }).find("character 4 ('U') is not a DNA letter"), std::string::npos);
}

TEST(CliGenerate, BadRequestsAreOneClearErrorWithTheirExitCode) {
  const std::string d = temp_dir("gen_bad");
  export_model(d + "/hf", 256, "byte");
  auto one_error = [&](const std::string& args, int code, const std::string& what) {
    const Out r = run_split(args, d);
    EXPECT_EQ(r.code, code) << args << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, what)) << args << "\n" << r.err;
    EXPECT_EQ(lines_starting(r.err, "mamba-train: error: ").size(), 1u) << r.err;
    EXPECT_EQ(r.out, "") << args;
  };
  const std::string hf = "generate --hf " + d + "/hf --device cpu ";
  write_file(d + "/bad.txt", "1 2\n3 x 4\n");
  one_error(hf + "--prompt-ids " + d + "/bad.txt", 4, d + "/bad.txt:2:3: 'x' is not a token id");
  write_file(d + "/big.txt", "1 2\n300\n");
  one_error(hf + "--prompt-ids " + d + "/big.txt", 4, "outside the model's vocabulary [0, 256)");
  write_file(d + "/blank.txt", "1 2\n\n3\n");
  one_error(hf + "--prompt-ids " + d + "/blank.txt", 4, d + "/blank.txt:2: empty line");
  one_error(hf + "--prompt-ids " + d + "/missing.txt", 4, "ids file: " + d + "/missing.txt: cannot open");
  one_error(hf, 2, "give --prompt TEXT or --prompt-ids FILE");
  one_error(hf + "--prompt a --prompt-ids " + d + "/bad.txt", 2, "excludes");
  one_error(hf + "--prompt ''", 2, "--prompt is empty");
  one_error(hf + "--prompt a --temperature -1", 2, "temperature must be");
  one_error(hf + "--prompt a --top-p 0", 2, "top-p must be in (0, 1]");
  one_error(hf + "--prompt a --dtype i32", 2, "--dtype must be");
  one_error("generate " + d + "/nowhere --prompt a --device cpu", 5, d + "/nowhere");
  std::filesystem::remove_all(d);
}

TEST(CliBenchDecode, PrintsOneLinePerBatchSize) {
  CliResult r =
      run_cli(std::string("bench decode ") + kTinyModel + " --batch 1,3 --prompt-len 4 --new-tokens 5 --repeats 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto lines = lines_starting(r.out, "decode batch ");
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(contains(lines[0], "decode batch 1: ")) << lines[0];
  EXPECT_TRUE(contains(lines[1], "decode batch 3: ")) << lines[1];
  EXPECT_TRUE(contains(lines[1], "new tokens/s (3 x 5 tokens in ")) << lines[1];
  EXPECT_TRUE(contains(lines[1], "fused, cpu")) << lines[1];
  r = run_cli(std::string("bench decode ") + kTinyModel +
              " --batch 2 --prompt-len 3 --new-tokens 2 --repeats 1 --reference");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "reference")) << r.out;
  r = run_cli(std::string("bench decode ") + kTinyModel +
              " --batch 2 --prompt-len 3 --new-tokens 4 --repeats 1 --temperature 0.7 --top-k 5 --top-p 0.9");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "sampled (temperature 0.7, top-k 5, top-p 0.9)")) << r.out;
  EXPECT_EQ(lines_starting(r.out, "decode batch 2: ").size(), 1u) << r.out;
}

TEST(CliBenchDecode, BadOptionsAreUsageErrors) {
  CliResult r = run_cli(std::string("bench decode ") + kTinyModel + " --batch 1,x");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --batch: expected a comma-separated list")) << r.out;
  r = run_cli(std::string("bench decode ") + kTinyModel + " --set bidirectional=true --batch 1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "bidirectional")) << r.out;
  r = run_cli(std::string("bench decode ") + kTinyModel + " --batch 1 --check --temperature 1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: bench decode: --check needs greedy (--temperature 0)")) << r.out;
  r = run_cli(std::string("bench decode ") + kTinyModel + " --batch 1 --top-p 0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--top-p")) << r.out;
}
