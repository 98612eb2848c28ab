// Data sources for the trainer (data/): byte-level text windows and the selective copying task. Both must be pure
// functions of (seed, sample index) so that a resumed run sees the same batches.
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>

#include "data/selective_copying.h"
#include "data/text_dataset.h"
#include "test_util.h"

using namespace mt;
using namespace mt::data;

namespace {

std::string temp_file(const std::string& content) {
  char tmpl[] = "/tmp/mt_data_XXXXXX";
  const int fd = mkstemp(tmpl);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(tmpl, std::ios::binary) << content;
  return tmpl;
}

// Deterministic non-trivial content: every window is (almost surely) unique.
std::string corpus(size_t n) {
  std::string s(n, '\0');
  uint64_t x = 88172645463325252ULL;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

std::vector<int64_t> row(const Tensor& t, int64_t r) {
  const int64_t L = t.size(1);
  std::vector<int64_t> v = t.to_vector_i64();
  return std::vector<int64_t>(v.begin() + r * L, v.begin() + (r + 1) * L);
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

template <typename F>
std::string error_of(F f, ErrorKind expected) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(expected)) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no mt::Error thrown";
  return "";
}

struct TextFixture : ::testing::Test {
  void SetUp() override {
    content = corpus(5000);
    path = temp_file(content);
  }
  void TearDown() override { std::remove(path.c_str()); }
  std::string content, path;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ text
TEST_F(TextFixture, SplitAndShapes) {
  TextDataset ds(path, 0.1, 32);
  EXPECT_EQ(ds.size(), 5000);
  EXPECT_EQ(ds.val_size(), 500);
  EXPECT_EQ(ds.train_size(), 4500);
  EXPECT_EQ(ds.vocab_size(), 256);
  Batch b = ds.train_batch(7, 0, 4);
  EXPECT_EQ(b.ids.shape(), (Shape{4, 32}));
  EXPECT_EQ(b.ids.dtype(), DType::I64);
  EXPECT_EQ(b.targets.shape(), (Shape{4, 32}));
  EXPECT_EQ(b.targets.to_vector_i64(), b.ids.to_vector_i64());  // LM: targets == ids (the loss shifts)
  EXPECT_FALSE(b.targets.same(b.ids));
  EXPECT_FALSE(b.mask.defined());
  EXPECT_EQ(b.tokens, 4 * 32);
}

TEST_F(TextFixture, TrainBatchesAreDeterministicPerSample) {
  TextDataset ds(path, 0.1, 32);
  Batch a = ds.train_batch(42, 16, 8);
  Batch a2 = ds.train_batch(42, 16, 8);
  EXPECT_EQ(a.ids.to_vector_i64(), a2.ids.to_vector_i64());
  // A batch of 8 from sample 16 is samples 16..23 one at a time.
  for (int64_t r = 0; r < 8; ++r) {
    Batch one = ds.train_batch(42, 16 + r, 1);
    EXPECT_EQ(row(a.ids, r), row(one.ids, 0)) << "sample " << 16 + r;
    EXPECT_EQ(ds.train_start(42, 16 + r), ds.train_start(42, 16 + r));
  }
  // Another seed gives other windows.
  Batch c = ds.train_batch(43, 16, 8);
  EXPECT_NE(a.ids.to_vector_i64(), c.ids.to_vector_i64());
  int same_start = 0;
  for (int64_t i = 0; i < 64; ++i) same_start += ds.train_start(42, i) == ds.train_start(43, i);
  EXPECT_LT(same_start, 4);
}

TEST_F(TextFixture, TrainWindowsAreSubstringsOfTheTrainSplit) {
  const int64_t L = 32;
  TextDataset ds(path, 0.1, L);
  Batch b = ds.train_batch(3, 100, 64);
  std::set<int64_t> starts;
  for (int64_t r = 0; r < 64; ++r) {
    const int64_t s = ds.train_start(3, 100 + r);
    ASSERT_GE(s, 0);
    ASSERT_LE(s + L, ds.train_size()) << "a training window reaches into the held-out tail";
    starts.insert(s);
    std::vector<int64_t> want;
    for (int64_t t = 0; t < L; ++t) want.push_back(static_cast<unsigned char>(content[s + t]));
    EXPECT_EQ(row(b.ids, r), want);
  }
  EXPECT_GT(starts.size(), 50u);  // spread over the file, not stuck
  // Over many samples the starts cover both ends of the valid range.
  int64_t lo = ds.train_size(), hi = 0;
  for (int64_t i = 0; i < 4000; ++i) {
    lo = std::min(lo, ds.train_start(9, i));
    hi = std::max(hi, ds.train_start(9, i));
  }
  EXPECT_LT(lo, 20);
  EXPECT_GT(hi, ds.train_size() - L - 20);
  EXPECT_LE(hi, ds.train_size() - L);
}

TEST_F(TextFixture, ValBatchesAreFixedEvenlySpacedAndPadded) {
  const int64_t L = 32;
  TextDataset ds(path, 0.1, L);  // 500 held-out bytes -> 15 windows
  EXPECT_EQ(ds.num_val_windows(), 15);
  EXPECT_EQ(ds.num_val_batches(4), 4);
  EXPECT_EQ(ds.val_start(0), ds.train_size());
  EXPECT_EQ(ds.val_start(14) + L, ds.size());
  for (int64_t w = 1; w < 15; ++w) EXPECT_GE(ds.val_start(w) - ds.val_start(w - 1), L);
  for (int64_t k = 0; k < 4; ++k) {
    Batch a = ds.val_batch(k, 4), b = ds.val_batch(k, 4);
    EXPECT_EQ(a.ids.to_vector_i64(), b.ids.to_vector_i64());
    EXPECT_EQ(a.targets.to_vector_i64(), b.targets.to_vector_i64());
  }
  Batch first = ds.val_batch(0, 4);
  for (int64_t r = 0; r < 4; ++r) {
    std::vector<int64_t> want;
    for (int64_t t = 0; t < L; ++t) want.push_back(static_cast<unsigned char>(content[ds.val_start(r) + t]));
    EXPECT_EQ(row(first.ids, r), want);
    EXPECT_EQ(row(first.targets, r), want);
  }
  EXPECT_FALSE(first.mask.defined());
  // The last batch holds windows 12..14 and one padding row: not scored, mask 0.
  Batch last = ds.val_batch(3, 4);
  EXPECT_EQ(last.tokens, 3 * L);
  ASSERT_TRUE(last.mask.defined());
  std::vector<double> m = last.mask.to_vector();
  for (int64_t i = 0; i < 4 * L; ++i) EXPECT_EQ(m[i], i < 3 * L ? 1.0 : 0.0);
  for (int64_t v : row(last.targets, 3)) EXPECT_EQ(v, kIgnoreIndex);
  // Independent of batch size: the same windows in another grouping.
  EXPECT_EQ(row(ds.val_batch(2, 5).ids, 4), row(ds.val_batch(14, 1).ids, 0));
  error_of([&] { ds.val_batch(4, 4); }, ErrorKind::Internal);
}

TEST_F(TextFixture, NoHeldOutTail) {
  TextDataset ds(path, 0.0, 32);
  EXPECT_EQ(ds.train_size(), 5000);
  EXPECT_EQ(ds.num_val_batches(8), 0);
}

TEST_F(TextFixture, FingerprintTracksContent) {
  TextDataset a(path, 0.1, 32);
  EXPECT_EQ(a.fingerprint(), TextDataset(path, 0.2, 16).fingerprint());  // content only
  EXPECT_TRUE(contains(a.fingerprint(), "bytes:5000:fnv1a64:")) << a.fingerprint();
  EXPECT_EQ(a.fingerprint().size(), std::string("bytes:5000:fnv1a64:").size() + 16);
  std::string changed = content;
  changed[2500] = static_cast<char>(changed[2500] ^ 1);
  const std::string p2 = temp_file(changed);
  EXPECT_NE(TextDataset(p2, 0.1, 32).fingerprint(), a.fingerprint());
  std::remove(p2.c_str());
  // FNV-1a reference values.
  EXPECT_EQ(fnv1a64(nullptr, 0), 0xcbf29ce484222325ULL);
  const uint8_t a_byte = 'a';
  EXPECT_EQ(fnv1a64(&a_byte, 1), 0xaf63dc4c8601ec8cULL);
}

TEST(TextDataset, ErrorsNameThePath) {
  std::string msg = error_of([] { TextDataset("/nonexistent/corpus.txt", 0.1, 32); }, ErrorKind::Data);
  EXPECT_TRUE(contains(msg, "/nonexistent/corpus.txt")) << msg;
  EXPECT_TRUE(contains(msg, "No such file")) << msg;

  msg = error_of([] { TextDataset("/tmp", 0.1, 32); }, ErrorKind::Data);
  EXPECT_TRUE(contains(msg, "'/tmp'")) << msg;
  EXPECT_TRUE(contains(msg, "not a regular file")) << msg;

  const std::string small = temp_file(std::string(100, 'x'));
  msg = error_of([&] { TextDataset(small, 0.1, 32); }, ErrorKind::Data);
  EXPECT_TRUE(contains(msg, small)) << msg;
  EXPECT_TRUE(contains(msg, "has 100 bytes")) << msg;
  // 320 bytes give a 32-byte held-out tail and 288 training bytes: the smallest size that works.
  EXPECT_TRUE(contains(msg, "at least 320 bytes")) << msg;
  std::ofstream(small, std::ios::binary) << std::string(320, 'x');
  EXPECT_NO_THROW(TextDataset(small, 0.1, 32));
  std::ofstream(small, std::ios::binary) << std::string(319, 'x');
  EXPECT_THROW(TextDataset(small, 0.1, 32), Error);
  // Without a held-out tail one window is enough.
  msg = error_of([&] { TextDataset(small, 0.0, 400); }, ErrorKind::Data);
  EXPECT_TRUE(contains(msg, "at least 400 bytes")) << msg;
  std::remove(small.c_str());

  msg = error_of([] { TextDataset("x", 1.0, 32); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.val_fraction")) << msg;
  msg = error_of([] { TextDataset("x", 0.1, 1); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.seq_len")) << msg;
}

TEST(TextDataset, ShippedCorpus) {
  TextDataset ds(test::source_path("data/corpora/tinyshakespeare.txt"), 0.1, 256);
  Batch b = ds.train_batch(0, 0, 2);
  for (int64_t v : b.ids.to_vector_i64()) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 256);
  }
  EXPECT_GT(ds.num_val_batches(8), 10);
}

// ------------------------------------------------------------------------------------------------ selective copying
TEST(SelectiveCopying, Layout) {
  const int64_t L = 40, K = 5, V = 8, M = L - K;
  SelectiveCopying task(L, K, V);
  EXPECT_EQ(task.vocab_size(), V + 2);
  EXPECT_EQ(task.marker(), V + 1);
  Batch b = task.train_batch(11, 0, 16);
  EXPECT_EQ(b.ids.shape(), (Shape{16, L}));
  EXPECT_EQ(b.targets.shape(), (Shape{16, L}));
  EXPECT_EQ(b.tokens, 16 * L);
  EXPECT_FALSE(b.mask.defined());
  std::set<int64_t> first_positions;
  for (int64_t r = 0; r < 16; ++r) {
    std::vector<int64_t> ids = row(b.ids, r), tg = row(b.targets, r);
    std::vector<int64_t> data;
    for (int64_t t = 0; t < M; ++t) {
      ASSERT_GE(ids[t], 0);
      ASSERT_LE(ids[t], V);
      if (ids[t] != 0) {
        data.push_back(ids[t]);
        if (data.size() == 1) first_positions.insert(t);
      }
    }
    ASSERT_EQ(static_cast<int64_t>(data.size()), K) << "K data tokens in the context";
    for (int64_t t = M; t < L; ++t) EXPECT_EQ(ids[t], V + 1) << "markers fill the last K positions";
    for (int64_t t = 0; t < M; ++t) EXPECT_EQ(tg[t], kIgnoreIndex);
    // Data token j is the target at M + j: predicted (next-token shift) from position M + j - 1.
    for (int64_t j = 0; j < K; ++j) EXPECT_EQ(tg[M + j], data[j]) << "row " << r << " token " << j;
  }
  EXPECT_GT(first_positions.size(), 3u);  // positions are random
}

TEST(SelectiveCopying, MinimalLengthAndPositionsCoverContext) {
  // seq_len = 2K + 1: the context has K + 1 slots; every position must be reachable.
  SelectiveCopying task(7, 3, 2);
  std::vector<int> hits(4, 0);
  std::set<int64_t> tokens;
  Batch b = task.train_batch(5, 0, 200);
  for (int64_t r = 0; r < 200; ++r) {
    std::vector<int64_t> ids = row(b.ids, r);
    int n = 0;
    for (int t = 0; t < 4; ++t) {
      if (ids[t] != 0) {
        ++hits[t];
        ++n;
        tokens.insert(ids[t]);
      }
    }
    EXPECT_EQ(n, 3);
  }
  for (int t = 0; t < 4; ++t) EXPECT_GT(hits[t], 100) << "position " << t;  // each is used 3/4 of the time
  EXPECT_EQ(tokens, (std::set<int64_t>{1, 2}));
}

TEST(SelectiveCopying, DeterministicPerSample) {
  SelectiveCopying task(64, 8, 16);
  Batch a = task.train_batch(42, 16, 8);
  EXPECT_EQ(a.ids.to_vector_i64(), task.train_batch(42, 16, 8).ids.to_vector_i64());
  for (int64_t r = 0; r < 8; ++r) {
    Batch one = task.train_batch(42, 16 + r, 1);
    EXPECT_EQ(row(a.ids, r), row(one.ids, 0));
    EXPECT_EQ(row(a.targets, r), row(one.targets, 0));
  }
  EXPECT_NE(a.ids.to_vector_i64(), task.train_batch(43, 16, 8).ids.to_vector_i64());
  EXPECT_NE(a.ids.to_vector_i64(), task.train_batch(42, 17, 8).ids.to_vector_i64());
}

TEST(SelectiveCopying, ValidationIsFixedAndSeparate) {
  SelectiveCopying task(32, 4, 8, 10);
  EXPECT_EQ(task.num_val_batches(4), 3);
  Batch v = task.val_batch(1, 4);
  EXPECT_EQ(v.ids.to_vector_i64(), task.val_batch(1, 4).ids.to_vector_i64());
  EXPECT_EQ(row(v.ids, 2), row(task.val_batch(6, 1).ids, 0));  // independent of the batch size
  for (uint64_t seed : {0ULL, 1ULL, 42ULL}) {
    Batch t = task.train_batch(seed, 4, 4);
    EXPECT_NE(t.ids.to_vector_i64(), v.ids.to_vector_i64()) << "validation must not be a training stream";
  }
  Batch last = task.val_batch(2, 4);  // samples 8, 9 and two padding rows
  EXPECT_EQ(last.tokens, 2 * 32);
  ASSERT_TRUE(last.mask.defined());
  for (int64_t t : row(last.targets, 3)) EXPECT_EQ(t, kIgnoreIndex);
  EXPECT_EQ(task.fingerprint(), "selective_copying:v1:seq_len=32:copy_tokens=4:copy_vocab=8");
  EXPECT_NE(task.fingerprint(), SelectiveCopying(32, 4, 9).fingerprint());
}

TEST(SelectiveCopying, ConfigErrorsNameTheKey) {
  std::string msg = error_of([] { SelectiveCopying(8, 4, 8); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.seq_len")) << msg;
  msg = error_of([] { SelectiveCopying(32, 0, 8); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.copy_tokens")) << msg;
  msg = error_of([] { SelectiveCopying(32, 4, 0); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.copy_vocab")) << msg;
  msg = error_of([] { SelectiveCopying(32, 4, 8, 0); }, ErrorKind::Config);
  EXPECT_TRUE(contains(msg, "data.val_samples")) << msg;
  EXPECT_NO_THROW(SelectiveCopying(9, 4, 1));
}

namespace {

// Logits [B, L, V] that predict `pred[b][t]` at position t (one-hot-ish with noise, never zero).
Tensor logits_for(const std::vector<std::vector<int64_t>>& pred, int64_t V, DType dt) {
  const int64_t B = static_cast<int64_t>(pred.size()), L = static_cast<int64_t>(pred[0].size());
  std::vector<double> v(static_cast<size_t>(B * L * V));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t k = 0; k < V; ++k)
        v[(b * L + t) * V + k] = (k == pred[b][t] ? 3.0 : -1.0) + 0.01 * static_cast<double>((k * 7 + t) % 5);
  return Tensor::from_vector(v, {B, L, V}, dt);
}

}  // namespace

TEST(SelectiveCopying, CopyAccuracy) {
  const int64_t L = 12, K = 4, V = 6, M = L - K;
  SelectiveCopying task(L, K, V);
  Batch b = task.train_batch(1, 0, 3);
  std::vector<std::vector<int64_t>> perfect(3, std::vector<int64_t>(L, 0)), half = perfect;
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int64_t> tg = row(b.targets, r);
    for (int64_t j = 0; j < K; ++j) {
      perfect[r][M + j - 1] = tg[M + j];                                  // logits at t predict targets[t+1]
      half[r][M + j - 1] = j % 2 == 0 ? tg[M + j] : (tg[M + j] % V) + 1;  // a different data token
    }
  }
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    EXPECT_DOUBLE_EQ(copy_accuracy(logits_for(perfect, task.vocab_size(), dt), b), 1.0) << dtype_name(dt);
    EXPECT_DOUBLE_EQ(copy_accuracy(logits_for(half, task.vocab_size(), dt), b), 0.5) << dtype_name(dt);
  }
  CopyScore s = copy_score(logits_for(half, task.vocab_size(), DType::F32), b);
  EXPECT_EQ(s.scored, 3 * K);
  EXPECT_EQ(s.correct, 3 * K / 2);
  // Unshifted predictions (logits at the target's own position) are wrong.
  std::vector<std::vector<int64_t>> unshifted(3, std::vector<int64_t>(L, 0));
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t j = 0; j < K; ++j) unshifted[r][M + j] = row(b.targets, r)[M + j];
  EXPECT_LT(copy_accuracy(logits_for(unshifted, task.vocab_size(), DType::F32), b), 0.5);
  // A NaN logit row is wrong even where the other entries point at the target.
  Tensor nan_logits = logits_for(perfect, task.vocab_size(), DType::F32);
  nan_logits.data<float>()[(0 * L + M - 1) * task.vocab_size() + 0] = NAN;
  EXPECT_NEAR(copy_accuracy(nan_logits, b), (3.0 * K - 1) / (3.0 * K), 1e-12);
  EXPECT_THROW(copy_accuracy(Tensor::zeros({3, L - 1, task.vocab_size()}), b), Error);
}
