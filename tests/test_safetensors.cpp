// safetensors reader / writer: bit-exact round trips of every dtype, metadata, atomic writes, and one test per
// validation failure (each checks the ErrorKind and that the message names the file and the tensor).
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

namespace mt {
namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/mt_safetensors_XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Names in the directory (to check that no temporary file is left behind).
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  // Write a file by hand: 8-byte length (or `len_override`), header text, data bytes.
  std::string craft(const std::string& name, const std::string& header, const std::vector<uint8_t>& data,
                    int64_t len_override = -1) {
    std::string p = path(name);
    std::ofstream f(p, std::ios::binary);
    uint64_t n = len_override >= 0 ? static_cast<uint64_t>(len_override) : header.size();
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    return p;
  }

  std::string dir_;
};

// Run fn; expect an mt::Error of `kind` whose message contains every needle.
void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    return;
  }
  ADD_FAILURE() << "no mt::Error thrown";
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  const uint8_t* p = static_cast<const uint8_t*>(c.data_ptr());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

TEST_F(SafetensorsTest, RoundTripEveryDtypeBitExact) {
  Generator gen(1234);
  std::map<std::string, Tensor> in;
  in["a.f32"] = Tensor::randn({3, 5}, gen, 0.0, 1.0, DType::F32);
  in["b.f64"] = Tensor::randn({7}, gen, 0.0, 1.0, DType::F64);
  in["c.i32"] = Tensor::randint({2, 3}, gen, -1000, 1000, DType::I32);
  in["d.i64"] = Tensor::from_vector_i64({INT64_MIN, -1, 0, 1, INT64_MAX}, {5}, DType::I64);
  // 16-bit types with hand-picked bit patterns: subnormals, -0, inf, NaN payloads must survive untouched.
  const std::vector<uint16_t> bits = {0x0001, 0x8000, 0x7c00, 0x7e01, 0x3f80, 0xffff, 0x1234, 0x7f80, 0x0400};
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor t = Tensor::empty({3, 3}, dt);
    std::memcpy(t.data_ptr(), bits.data(), bits.size() * 2);
    in[dt == DType::BF16 ? "e.bf16" : "f.f16"] = t;
  }
  in["g.scalar"] = Tensor::scalar(3.25, DType::F64);
  in["h.empty"] = Tensor::zeros({0, 4}, DType::F32);
  // A non-contiguous view (transpose) is written as its packed contents.
  Tensor base = Tensor::randn({4, 6}, gen, 0.0, 1.0, DType::F32);
  in["i.transposed"] = base.as_strided({6, 4}, {1, 6}, 0);

  const std::string p = path("all.safetensors");
  save_safetensors(p, in);
  auto out = load_safetensors(p);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& kv : in) {
    ASSERT_TRUE(out.count(kv.first)) << kv.first;
    const Tensor& got = out.at(kv.first);
    EXPECT_EQ(got.dtype(), kv.second.dtype()) << kv.first;
    EXPECT_EQ(got.shape(), kv.second.shape()) << kv.first;
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_FALSE(got.is_cuda());
    EXPECT_EQ(bytes_of(got), bytes_of(kv.second)) << kv.first;
  }
  EXPECT_EQ(out.at("g.scalar").item(), 3.25);
  EXPECT_EQ(listing(), std::vector<std::string>{"all.safetensors"});  // no temporary left behind

  // Header: length a multiple of 8, data offsets in sorted name order.
  std::ifstream f(p, std::ios::binary);
  uint8_t len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, ' ');
  f.read(&header[0], static_cast<std::streamsize>(n));
  EXPECT_LT(header.find("\"a.f32\""), header.find("\"b.f64\""));
  EXPECT_NE(header.find("\"data_offsets\":[0,60]"), std::string::npos) << header;  // a.f32 first: 15 * 4 bytes
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "quotes \" and \\ and unicode \xc3\xa9"}, {"empty", ""}};
  const std::string p = path("meta.safetensors");
  save_safetensors(p, {{"w", Tensor::full({2}, 1.5)}}, meta);
  EXPECT_EQ(safetensors_metadata(p), meta);
  EXPECT_EQ(load_safetensors(p).size(), 1u);  // __metadata__ is not a tensor
  save_safetensors(p, {{"w", Tensor::full({2}, 1.5)}});
  EXPECT_TRUE(safetensors_metadata(p).empty());
}

TEST_F(SafetensorsTest, OverwriteReplacesTheFile) {
  const std::string p = path("w.safetensors");
  save_safetensors(p, {{"x", Tensor::full({3}, 1.0)}, {"y", Tensor::full({1}, 2.0)}});
  save_safetensors(p, {{"x", Tensor::full({2}, 7.0)}});
  auto out = load_safetensors(p);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.at("x").to_vector(), (std::vector<double>{7.0, 7.0}));
  EXPECT_EQ(listing(), std::vector<std::string>{"w.safetensors"});
}

// A file as the Python library writes it (header not padded, metadata present): little-endian F32 1.0 and -2.5.
TEST_F(SafetensorsTest, ReadsUnpaddedReferenceLayout) {
  const std::string header = R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string p = craft("ref.safetensors", header, {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0});
  auto out = load_safetensors(p);
  EXPECT_EQ(out.at("w").to_vector(), (std::vector<double>{1.0, -2.5}));
  EXPECT_EQ(safetensors_metadata(p).at("format"), "pt");
}

// ---- validation failures: each an ErrorKind::Checkpoint naming the file (and the tensor where there is one) ----

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("nope.safetensors");
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "No such file or directory"});
  expect_error([&] { safetensors_metadata(p); }, ErrorKind::Checkpoint, {p, "No such file"});
}

TEST_F(SafetensorsTest, DirectoryIsNotAFile) {
  expect_error([&] { load_safetensors(dir_); }, ErrorKind::Checkpoint, {dir_, "not a regular file"});
}

TEST_F(SafetensorsTest, ShorterThanEightBytes) {
  const std::string p = path("short.safetensors");
  std::ofstream(p, std::ios::binary) << "abc";
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "3 bytes", "shorter than"});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  const std::string p = craft("long.safetensors", "{}", {}, 1000);
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "header length 1000", "larger than"});
}

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
  const std::string p = craft("huge.safetensors", "{}", {}, 200000000);
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "200000000", "100 MB"});
}

TEST_F(SafetensorsTest, InvalidJson) {
  const std::string p = craft("json.safetensors", R"({"w": {"dtype": "F32",)", {});
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "not valid JSON", "parse error"});
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  const std::string p = craft("arr.safetensors", "[1, 2]", {});
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "must be a JSON object", "array"});
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  const std::string p = craft("entry.safetensors", R"({"w": [0, 4]})", zeros(4));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "must be a JSON object"});
}

TEST_F(SafetensorsTest, MissingKey) {
  const std::string p = craft("key.safetensors", R"({"w": {"dtype": "F32", "shape": [1]}})", zeros(4));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "data_offsets"});
}

TEST_F(SafetensorsTest, WrongTypes) {
  auto p1 = craft("t1.safetensors", R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p1); }, ErrorKind::Checkpoint, {p1, "'w'", "\"dtype\" must be a string"});
  auto p2 = craft("t2.safetensors", R"({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p2); }, ErrorKind::Checkpoint, {p2, "'w'", "\"shape\" must be an array"});
  auto p3 = craft("t3.safetensors", R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p3); }, ErrorKind::Checkpoint, {p3, "'w'", "shape[0]", "1.5"});
  auto p4 = craft("t4.safetensors", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", zeros(8));
  expect_error([&] { load_safetensors(p4); }, ErrorKind::Checkpoint, {p4, "'w'", "[begin, end]"});
  auto p5 = craft("t5.safetensors", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": 4}})", zeros(4));
  expect_error([&] { load_safetensors(p5); }, ErrorKind::Checkpoint, {p5, "'w'", "[begin, end]"});
  auto p6 =
      craft("t6.safetensors",
            R"({"__metadata__": {"a": 1}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { safetensors_metadata(p6); }, ErrorKind::Checkpoint, {p6, "__metadata__", "'a'", "string"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const std::string p =
      craft("dt.safetensors", R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "unsupported dtype 'U8'"});
}

TEST_F(SafetensorsTest, NegativeShape) {
  const std::string p =
      craft("neg.safetensors", R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "shape[0]", "non-negative"});
}

TEST_F(SafetensorsTest, AbsurdShape) {
  const std::string p = craft(
      "absurd.safetensors",
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 4]}})", zeros(4));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "absurd shape"});
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  const std::string p =
      craft("order.safetensors", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", zeros(8));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "begin > end"});
}

TEST_F(SafetensorsTest, SizeMismatch) {
  const std::string p =
      craft("size.safetensors", R"({"w": {"dtype": "F64", "shape": [2, 3], "data_offsets": [0, 24]}})", zeros(48));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "24 bytes", "needs 48"});
}

TEST_F(SafetensorsTest, OffsetsPastEndOfFile) {
  const std::string p =
      craft("oob.safetensors", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", zeros(12));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'w'", "past the end", "12 bytes"});
}

TEST_F(SafetensorsTest, OverlappingEntries) {
  const std::string p = craft("overlap.safetensors",
                              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                              R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                              zeros(12));
  expect_error([&] { load_safetensors(p); }, ErrorKind::Checkpoint, {p, "'b'", "overlap", "'a'"});
}

// Empty tensors occupy no bytes and may share an offset with anything.
TEST_F(SafetensorsTest, EmptyTensorsDoNotOverlap) {
  const std::string p = craft("emptyok.safetensors",
                              R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                              R"( "b": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})",
                              {0x00, 0x00, 0x80, 0x3f});
  auto out = load_safetensors(p);
  EXPECT_EQ(out.at("a").item(), 1.0);
  EXPECT_EQ(out.at("b").numel(), 0);
}

// ---- write failures: ErrorKind::Io naming the path, and no temporary file left behind ----

TEST_F(SafetensorsTest, SaveIntoMissingDirectory) {
  const std::string p = path("no/such/dir/w.safetensors");
  expect_error(
      [&] {
        save_safetensors(p, {{"x", Tensor::full({1}, 1.0)}});
      },
      ErrorKind::Io, {p, "No such file or directory"});
}

TEST_F(SafetensorsTest, SaveOverADirectoryFailsCleanly) {
  std::filesystem::create_directory(path("target"));
  const std::string p = path("target");
  expect_error([&] { save_safetensors(p, {{"x", Tensor::full({1}, 1.0)}}); }, ErrorKind::Io, {p, "rename"});
  EXPECT_EQ(listing(), std::vector<std::string>{"target"});  // the temporary was removed
}

TEST_F(SafetensorsTest, SaveRejectsBadNames) {
  const std::string p = path("bad.safetensors");
  expect_error(
      [&] {
        save_safetensors(p, {{"__metadata__", Tensor::full({1}, 1.0)}});
      },
      ErrorKind::Shape, {"__metadata__", "reserved"});
  expect_error([&] { save_safetensors(p, {{"x", Tensor()}}); }, ErrorKind::Shape, {"'x'", "undefined"});
  EXPECT_TRUE(listing().empty());
}

// ---- files written by Python (tools/gen_parity.py: torch + safetensors + transformers), read back here ----

// HF names and shapes of the parity model (docs/DESIGN.md "HuggingFace names and files"): V 37, d 24, d_inner 48,
// N 5, K 3, dt_rank 4, 3 layers, tied (no lm_head.weight), no in/out projection bias.
std::map<std::string, Shape> parity_shapes() {
  std::map<std::string, Shape> s = {{"backbone.embeddings.weight", {37, 24}}, {"backbone.norm_f.weight", {24}}};
  for (int i = 0; i < 3; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    s[p + "norm.weight"] = {24};
    s[p + "mixer.in_proj.weight"] = {96, 24};
    s[p + "mixer.conv1d.weight"] = {48, 1, 3};
    s[p + "mixer.conv1d.bias"] = {48};
    s[p + "mixer.x_proj.weight"] = {14, 48};
    s[p + "mixer.dt_proj.weight"] = {48, 4};
    s[p + "mixer.dt_proj.bias"] = {48};
    s[p + "mixer.A_log"] = {48, 5};
    s[p + "mixer.D"] = {48};
    s[p + "mixer.out_proj.weight"] = {24, 48};
  }
  return s;
}

TEST(SafetensorsParityData, WeightsHaveHfNamesShapesAndDtypes) {
  const auto want = parity_shapes();
  auto f64 = load_safetensors(test::source_path("tests/data/parity/model.safetensors"));
  auto f32 = load_safetensors(test::source_path("tests/data/parity_f32/model.safetensors"));
  EXPECT_EQ(safetensors_metadata(test::source_path("tests/data/parity/model.safetensors")).at("format"), "pt");
  ASSERT_EQ(f64.size(), want.size());
  ASSERT_EQ(f32.size(), want.size());
  for (const auto& kv : want) {
    ASSERT_TRUE(f64.count(kv.first)) << kv.first;
    ASSERT_TRUE(f32.count(kv.first)) << kv.first;
    EXPECT_EQ(f64.at(kv.first).shape(), kv.second) << kv.first;
    EXPECT_EQ(f64.at(kv.first).dtype(), DType::F64) << kv.first;
    EXPECT_EQ(f32.at(kv.first).dtype(), DType::F32) << kv.first;
    // The fp32 file is the fp64 weights rounded to float.
    auto a = f64.at(kv.first).to_vector();
    auto b = f32.at(kv.first).to_vector();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(static_cast<double>(static_cast<float>(a[i])), b[i]) << kv.first;
  }
}

// The golden tensors are consistent with each other: logits = last_hidden_state @ embedding^T (tied head) and
// loss = mean cross-entropy of logits[:, t] against ids[:, t+1]; one gradient per weight with the weight's shape.
TEST(SafetensorsParityData, GoldenIsSelfConsistent) {
  auto w = load_safetensors(test::source_path("tests/data/parity/model.safetensors"));
  auto g = load_safetensors(test::source_path("tests/data/parity/golden.safetensors"));
  const int64_t B = 3, L = 11, V = 37, d = 24;
  ASSERT_EQ(g.at("logits").shape(), (Shape{B, L, V}));
  ASSERT_EQ(g.at("last_hidden_state").shape(), (Shape{B, L, d}));
  ASSERT_EQ(g.at("loss").shape(), Shape{});
  for (const auto& kv : w) {
    ASSERT_TRUE(g.count("grad/" + kv.first)) << kv.first;
    EXPECT_EQ(g.at("grad/" + kv.first).shape(), kv.second.shape()) << kv.first;
    EXPECT_EQ(g.at("grad/" + kv.first).dtype(), DType::F64) << kv.first;
  }
  EXPECT_EQ(g.size(), w.size() + 3);

  std::vector<int64_t> ids;
  std::ifstream in(test::source_path("tests/data/parity/ids.txt"));
  for (int64_t v; in >> v;) ids.push_back(v);
  ASSERT_EQ(ids.size(), static_cast<size_t>(B * L));

  const auto logits = g.at("logits").to_vector();
  const auto h = g.at("last_hidden_state").to_vector();
  const auto emb = w.at("backbone.embeddings.weight").to_vector();
  double worst = 0, loss = 0;
  for (int64_t bt = 0; bt < B * L; ++bt) {
    for (int64_t v = 0; v < V; ++v) {
      double acc = 0;
      for (int64_t k = 0; k < d; ++k) acc += h[bt * d + k] * emb[v * d + k];
      worst = std::max(worst, std::fabs(acc - logits[bt * V + v]) / (1.0 + std::fabs(acc)));
    }
    if (bt % L == L - 1) continue;  // the last position predicts nothing
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[bt * V + v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[bt * V + v] - mx);
    loss += mx + std::log(sum) - logits[bt * V + ids[bt + 1]];
  }
  loss /= static_cast<double>(B * (L - 1));
  EXPECT_LT(worst, 1e-12);
  EXPECT_NEAR(loss, g.at("loss").item(), 1e-12);
}

}  // namespace
}  // namespace mt
