// Labelled classification data (data/labelled.h, data/dna.h): readers, bad rows, splits, batches, and the
// classification trainer end to end on the shipped promoter data.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cli_util.h"
#include "data/dna.h"
#include "data/labelled.h"
#include "data/row_stream.h"
#include "data/text_dataset.h"
#include "run_util.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"

using namespace mt;
using namespace mt::data;
using test::contains;

namespace {

std::string write_file(const std::string& name, const std::string& content) {
  const std::string path = std::string("/tmp/mt_labelled_") + std::to_string(getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

using mt::test::error_of;

LabelledOptions tsv_opts(const std::string& path) {
  LabelledOptions o;
  o.format = "tsv";
  o.files = {path};
  o.text_column = "text";
  return o;
}

// 50 rows of byte text, labels 0 / 1, every (text, label) distinct.
std::string distinct_rows_tsv() {
  std::string rows = "label\ttext\n";
  for (int i = 0; i < 50; ++i) rows += std::to_string(i % 2) + "\t" + std::string(1 + i % 7, 'a' + i % 26) + "\n";
  return rows;
}

// The rows of a byte-text batch as "text/label"; padding after each row must be token 0.
std::vector<std::string> batch_rows(const Batch& b) {
  const int64_t B = b.ids.size(0), L = b.ids.size(1);
  const auto ids = b.ids.to_vector_i64();
  const auto m = b.mask.to_vector();
  const auto labels = b.labels.to_vector_i64();
  std::vector<std::string> out;
  for (int64_t r = 0; r < B; ++r) {
    std::string s;
    for (int64_t t = 0; t < L; ++t) {
      if (m[r * L + t] != 0)
        s += static_cast<char>(ids[r * L + t]);
      else
        EXPECT_EQ(ids[r * L + t], 0);  // padding after the row
    }
    out.push_back(s + "/" + std::to_string(labels[r]));
  }
  return out;
}

// The held-out examples of a split as "text/label" keys.
std::set<std::string> example_keys(const std::vector<Example>& ex) {
  std::set<std::string> k;
  for (const Example& e : ex) k.insert(std::string(e.ids.begin(), e.ids.end()) + "/" + std::to_string(e.label));
  return k;
}

}  // namespace

TEST(Dna, TokensCaseIupacAndReverseComplement) {
  std::vector<int32_t> ids;
  EXPECT_EQ(encode_dna("ACGTNacgtn", ids), -1);
  EXPECT_EQ(ids, (std::vector<int32_t>{kDnaA, kDnaC, kDnaG, kDnaT, kDnaN, kDnaA, kDnaC, kDnaG, kDnaT, kDnaN}));
  ids.clear();
  EXPECT_EQ(encode_dna("RYSWKMBDHVryswkmbdhv", ids), -1);
  for (int32_t t : ids) EXPECT_EQ(t, kDnaN);
  ids = {7};
  EXPECT_EQ(encode_dna("ACGU", ids), 3);    // U is RNA, not DNA
  EXPECT_EQ(ids, std::vector<int32_t>{7});  // unchanged on failure
  EXPECT_EQ(encode_dna("AC-G", ids), 2);
  std::vector<int32_t> s;
  encode_dna("AACGTN", s);
  reverse_complement(s.data(), static_cast<int64_t>(s.size()));
  std::vector<int32_t> want;
  encode_dna("NACGTT", want);
  EXPECT_EQ(s, want);
}

TEST(Labelled, TsvRowsLabelsAndBadRows) {
  const std::string p = write_file("a.tsv", "label\ttext\n1\thello\n0\tworld\r\n\n1\tbye\n");
  std::vector<Example> ex = read_labelled(tsv_opts(p), {p}, nullptr);
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[1].ids, (std::vector<int32_t>{'w', 'o', 'r', 'l', 'd'}));  // CR stripped
  const std::string bad = write_file("b.tsv", "label\ttext\n1\thello\n0\tx\ty\n2\tz\nx\tq\n1\t\n0\tok\n");
  EXPECT_EQ(error_of([&] { read_labelled(tsv_opts(bad), {bad}, nullptr); }),
            bad + ":3: 3 fields, the header has 2 (data.bad_rows: skip would skip and count such rows)");
  LabelledOptions o = tsv_opts(bad);
  o.bad_rows = "skip";
  ReadStats st;
  ex = read_labelled(o, {bad}, &st);
  EXPECT_EQ(ex.size(), 2u);
  EXPECT_EQ(st.skipped, 4);
  ASSERT_EQ(st.skipped_examples.size(), 4u);
  EXPECT_EQ(st.skipped_examples[1], bad + ":4: label 2 is outside [0, 2) (model.num_classes)");
  EXPECT_EQ(st.skipped_examples[2], bad + ":5: label 'x' is not an integer class index");
  EXPECT_EQ(st.skipped_examples[3], bad + ":6: empty text");
  o.text_column = "sentence";
  EXPECT_EQ(error_of([&] { read_labelled(o, {bad}, nullptr); }),
            bad + ":1: no column 'sentence' (data.text_column); the header has 'label', 'text'");
  const std::string ctl = write_file("ctl.tsv", std::string("label\ttext\n\x01\xff\tok\n"));
  EXPECT_EQ(error_of([&] { read_labelled(tsv_opts(ctl), {ctl}, nullptr); }),
            ctl +
                ":2: label '\\x01\\xff' is not an integer class index or a class name (names are UTF-8 text "
                "without control characters) (data.bad_rows: skip would skip and count such rows)");  // never raw
  unlink(ctl.c_str());
  const std::string none = write_file("c.tsv", "label\ttext\n5\tx\n");
  o.text_column = "text";
  EXPECT_TRUE(contains(error_of([&] { read_labelled(o, {none}, nullptr); }), "no usable rows (1 skipped")) << none;
  EXPECT_TRUE(
      contains(error_of([&] { read_labelled(o, {"/nonexistent.tsv"}, nullptr); }), "/nonexistent.tsv: cannot open"));
  for (auto& f : {p, bad, none}) unlink(f.c_str());
}

TEST(Labelled, CsvQuotingAndJsonl) {
  const std::string p =
      write_file("a.csv", "text,label\n\"a, b\",1\n\"say \"\"hi\"\"\",0\n\"two\nlines\",1\nplain,0\n");
  LabelledOptions o = tsv_opts(p);
  o.format = "csv";
  std::vector<Example> ex = read_labelled(o, {p}, nullptr);
  ASSERT_EQ(ex.size(), 4u);
  EXPECT_EQ(std::string(ex[0].ids.begin(), ex[0].ids.end()), "a, b");
  EXPECT_EQ(std::string(ex[1].ids.begin(), ex[1].ids.end()), "say \"hi\"");
  EXPECT_EQ(std::string(ex[2].ids.begin(), ex[2].ids.end()), "two\nlines");
  EXPECT_EQ(ex[3].label, 0);
  const std::string open = write_file("b.csv", "text,label\n\"never closed,1\n");
  EXPECT_EQ(error_of([&] { read_labelled(o, {open}, nullptr); }),
            open + ":2: a quoted field is not closed before the end of the file");
  const std::string j = write_file("a.jsonl",
                                   "{\"text\": \"x\", \"label\": 1}\n{\"text\": \"y\", \"label\": \"0\"}\n"
                                   "not json\n{\"text\": 3, \"label\": 0}\n{\"text\": \"z\", \"label\": 1.5}\n");
  o.format = "jsonl";
  o.bad_rows = "skip";
  ReadStats st;
  ex = read_labelled(o, {j}, &st);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[1].label, 0);
  EXPECT_EQ(st.skipped, 3);
  EXPECT_EQ(st.skipped_examples[0], j + ":3: not a JSON object");
  EXPECT_EQ(st.skipped_examples[1], j + ":4: no string field 'text' (data.text_column)");
  EXPECT_EQ(st.skipped_examples[2], j + ":5: label 1.5 is not an integer class index");
  for (auto& f : {p, open, j}) unlink(f.c_str());
}

TEST(Labelled, StringLabelsAreSortedNamesOrTheGivenOrder) {
  const std::string p = write_file("names.tsv", "label\ttext\npos\ta\nneg\tb\npos\tc\n");
  LabelledOptions o = tsv_opts(p);
  std::vector<std::string> names;
  std::vector<Example> ex = read_labelled(o, {p}, nullptr, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"neg", "pos"}));  // sorted
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[1].label, 0);
  o.label_names = {"pos", "neg"};  // data.label_names: this order
  ex = read_labelled(o, {p}, nullptr, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"pos", "neg"}));
  EXPECT_EQ(ex[0].label, 0);
  EXPECT_EQ(ex[1].label, 1);
  // Integer labels give no names.
  const std::string ints = write_file("ints.tsv", "label\ttext\n1\ta\n0\tb\n");
  read_labelled(tsv_opts(ints), {ints}, nullptr, &names);
  EXPECT_TRUE(names.empty());
  // More or fewer names than model.num_classes: one config error listing them.
  const std::string three = write_file("three.tsv", "label\ttext\npos\ta\nneg\tb\nmeh\tc\n");
  EXPECT_EQ(error_of([&] { read_labelled(tsv_opts(three), {three}, nullptr); }),
            "model.num_classes is 2 but the labels of " + three +
                " name 3 class(es): meh, neg, pos (set model.num_classes, or list every class in data.label_names)");
  o = tsv_opts(three);
  o.num_classes = 3;
  EXPECT_EQ(read_labelled(o, {three}, nullptr).size(), 3u);
  // Mixed: the first row decides; the other kind is a bad row.
  const std::string mixed = write_file("mixed.tsv", "label\ttext\npos\ta\n1\tb\nneg\tc\n");
  EXPECT_EQ(error_of([&] { read_labelled(tsv_opts(mixed), {mixed}, nullptr); }),
            mixed +
                ":3: label '1' is an integer but the labels are class names (the first row's is one); list every "
                "class in data.label_names to use it as a name (data.bad_rows: skip would skip and count such rows)");
  o = tsv_opts(mixed);
  o.label_names = {"1", "neg", "pos"};
  o.num_classes = 3;
  ex = read_labelled(o, {mixed}, nullptr);
  EXPECT_EQ(ex[1].label, 0);
  o.label_names = {"neg", "pos"};
  o.num_classes = 2;
  o.bad_rows = "skip";
  ReadStats st;
  ex = read_labelled(o, {mixed}, &st);
  EXPECT_EQ(ex.size(), 2u);
  EXPECT_EQ(st.skipped_examples[0], mixed + ":3: label '1' is not one of the class names (neg, pos)");
  // JSON lines: string labels too.
  const std::string j =
      write_file("names.jsonl", "{\"text\": \"x\", \"label\": \"b\"}\n{\"text\": \"y\", \"label\": \"a\"}\n");
  o = tsv_opts(j);
  o.format = "jsonl";
  ex = read_labelled(o, {j}, nullptr, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ex[0].label, 1);
  for (auto& f : {p, ints, three, mixed, j}) unlink(f.c_str());
}

TEST(Labelled, ValidationFileTakesTheTrainingClasses) {
  std::string rows = "label\ttext\n";
  for (int i = 0; i < 10; ++i) rows += std::string(i % 2 ? "pos" : "neg") + "\tt" + std::to_string(i) + "\n";
  const std::string train = write_file("vt.tsv", rows);
  const std::string val = write_file("vv.tsv", "label\ttext\npos\tx\nneg\ty\n");
  LabelledOptions o = tsv_opts(train);
  o.val_path = val;
  LabelledDataset ds(o);
  EXPECT_EQ(ds.label_names(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(ds.val_batch(0, 2).labels.to_vector_i64(), (std::vector<int64_t>{1, 0}));
  // A name the training file never used; integers when the training labels were names.
  const std::string other = write_file("vo.tsv", "label\ttext\nmeh\tx\n");
  o.val_path = other;
  EXPECT_TRUE(contains(error_of([&] { LabelledDataset x(o); }),
                       other + ":2: label 'meh' is not one of the class names (neg, pos)"));
  const std::string ints = write_file("vi.tsv", "label\ttext\n1\tx\n");
  o.val_path = ints;
  EXPECT_TRUE(contains(error_of([&] { LabelledDataset x(o); }), ints + ":2: label '1' is not one of the class names"));
  // Integer training labels: the validation file's must be integers too.
  const std::string itrain = write_file("it.tsv", "label\ttext\n1\ta\n0\tb\n");
  o = tsv_opts(itrain);
  o.val_path = val;
  EXPECT_TRUE(contains(error_of([&] { LabelledDataset x(o); }), val + ":2: label 'pos' is not an integer class index"));
  for (auto& f : {train, val, other, ints, itrain}) unlink(f.c_str());
}

TEST(Labelled, RowStreamAcrossChunkBoundariesAndGzip) {
  // CSV records straddling the reader's 64 KiB chunks: a doubled quote split across two chunks, and a quoted field
  // spanning lines. The same rows whether the file is gzip-compressed or not.
  std::string csv = "text,label\n";
  std::vector<std::string> want;
  for (int i = 0; csv.size() < 200000; ++i) {
    const std::string t = std::string(static_cast<size_t>(1 + (i * 37) % 300), 'a' + i % 26) + "\"q\"" +
                          (i % 5 == 0 ? "\nsecond line" : "") + std::to_string(i);
    want.push_back(t);
    std::string q;
    for (char c : t) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    csv += "\"" + q + "\"," + std::to_string(i % 2) + "\r\n";
  }
  const std::string p = write_file("chunks.csv", csv);
  ASSERT_EQ(std::system(("gzip -c " + p + " > " + p + ".gz").c_str()), 0);
  for (const std::string& f : {p, p + ".gz"}) {
    std::vector<std::string> got;
    data::RowSpec spec;
    spec.format = "csv";
    spec.text_column = "text";
    data::stream_rows(f, spec, [&](data::Row& r) {
      ASSERT_TRUE(r.problem.empty()) << r.problem;
      got.push_back(r.text);
      EXPECT_EQ(r.label, std::to_string((got.size() - 1) % 2));
    });
    EXPECT_EQ(got, want) << f;
  }
  // "lines": every non-blank line is a row.
  const std::string l = write_file("lines.txt", "one\r\n\n  \ntwo");
  std::vector<std::pair<int64_t, std::string>> lines;
  data::RowSpec ls;
  ls.format = "lines";
  data::stream_rows(l, ls, [&](data::Row& r) { lines.emplace_back(r.line, r.text); });
  EXPECT_EQ(lines, (std::vector<std::pair<int64_t, std::string>>{{1, "one"}, {4, "two"}}));
  for (auto& f : {p, p + ".gz", l}) unlink(f.c_str());
}

TEST(Labelled, FastaPerClassRecordsAndBadLetters) {
  const std::string a = write_file("a.fa", ">r1 some header\r\nACGT\r\nacgt\r\n>r2\nNNRY\n");
  const std::string b = write_file("b.fa", ">s1\nGGGG\n>empty\n>s3\nACGU\n>s4\nTTTT\n");
  LabelledOptions o;
  o.format = "fasta";
  o.tokenizer = "dna";
  o.files = {a, b};
  EXPECT_EQ(error_of([&] { read_labelled(o, o.files, nullptr); }),
            b + ":3: empty FASTA record (data.bad_rows: skip would skip and count such rows)");
  o.bad_rows = "skip";
  ReadStats st;
  std::vector<Example> ex = read_labelled(o, o.files, &st);
  ASSERT_EQ(ex.size(), 4u);
  EXPECT_EQ(ex[0].ids.size(), 8u);  // two lines joined, CR stripped, lowercase read
  EXPECT_EQ(ex[0].label, 0);
  EXPECT_EQ(ex[1].ids, (std::vector<int32_t>{kDnaN, kDnaN, kDnaN, kDnaN}));
  EXPECT_EQ(ex[2].label, 1);
  EXPECT_EQ(st.skipped, 2);
  EXPECT_EQ(st.skipped_examples[1],
            b + ":4: 'U' at offset 3 is not a DNA letter (A C G T, N or an IUPAC ambiguity code)");
  o.files = {a};
  EXPECT_TRUE(contains(error_of([&] { read_labelled(o, o.files, nullptr); }), "1 FASTA files for 2 classes"));
  unlink(a.c_str());
  unlink(b.c_str());
}

TEST(Labelled, AClassWithNoTrainingExampleIsRefusedNamingClassAndFile) {
  // An empty class file, a label no row carries, a class held out entirely: each used to train (and exit 0) a
  // classifier that could never predict that class.
  const std::string a = write_file("ca.fa", ">r1\nACGT\n>r2\nGGCC\n>r3\nTTAA\n>r4\nCCGG\n");
  const std::string empty = write_file("cempty.fa", "");
  LabelledOptions o;
  o.format = "fasta";
  o.tokenizer = "dna";
  o.val_fraction = 0.25;
  o.files = {a, empty};
  EXPECT_EQ(error_of([&] { LabelledDataset d(o); }),
            "class 1 has no training examples: '" + empty + "' (data.class_files[1]) has no usable record");
  const std::string headers_only = write_file("chdr.fa", ">a\n>b\n");
  o.files = {headers_only, a};
  o.bad_rows = "skip";
  EXPECT_EQ(error_of([&] { LabelledDataset d(o); }),
            "class 0 has no training examples: '" + headers_only + "' (data.class_files[0]) has no usable record");
  std::string rows = "label\ttext\n";
  for (int i = 0; i < 20; ++i) rows += (i % 3 == 2 ? "2" : "0") + std::string("\trow") + std::to_string(i) + "\n";
  const std::string tsv = write_file("c3.tsv", rows);
  LabelledOptions t = tsv_opts(tsv);
  t.num_classes = 3;
  EXPECT_EQ(error_of([&] { LabelledDataset d(t); }), "class 1 has no training examples: no row of '" + tsv +
                                                         "' has label 1 (model.num_classes 3: labels 0 .. 2)");
  // One row of class 1, and the validation split takes it.
  const std::string one = write_file("c1.tsv", "label\ttext\n0\ta\n0\tb\n0\tc\n1\td\n");
  LabelledOptions u = tsv_opts(one);
  u.val_fraction = 0.25;
  std::string held_out;
  for (uint64_t seed = 0; seed < 64 && held_out.empty(); ++seed) {
    u.split_seed = seed;
    try {
      LabelledDataset d(u);
    } catch (const Error& e) {
      held_out = e.what();
    }
  }
  EXPECT_EQ(held_out, "class 1 has no training examples: its only example in '" + one +
                          "' went to the validation split (data.val_fraction 0.25): add examples or give "
                          "data.val_path");
  for (auto& f : {a, empty, headers_only, tsv, one}) unlink(f.c_str());
}

TEST(Labelled, SplitsEpochsBatchesAndAugmentationAreDeterministic) {
  const std::string p = write_file("s.tsv", distinct_rows_tsv());
  LabelledOptions o = tsv_opts(p);
  o.val_fraction = 0.2;
  o.split_seed = 3;
  LabelledDataset ds(o), again(o);
  EXPECT_EQ(ds.num_train(), 40);
  EXPECT_EQ(ds.num_val(), 10);
  EXPECT_EQ(ds.fingerprint(), again.fingerprint());
  o.split_seed = 4;
  EXPECT_NE(LabelledDataset(o).fingerprint(), ds.fingerprint());  // another split
  // One epoch of training samples visits every training row once; batches depend only on (seed, first sample).
  std::multiset<std::string> seen;
  for (int64_t first = 0; first < 40; first += 8) {
    Batch b = ds.train_batch(9, first, 8), b2 = again.train_batch(9, first, 8);
    EXPECT_EQ(b.ids.to_vector_i64(), b2.ids.to_vector_i64());
    for (const std::string& k : batch_rows(b)) seen.insert(k);
  }
  EXPECT_EQ(seen.size(), 40u);
  // Row texts are all distinct, so 40 distinct strings mean every training row came exactly once.
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 40u);
  // The next epoch is another order of the same rows.
  EXPECT_NE(ds.train_batch(9, 40, 8).ids.to_vector_i64(), ds.train_batch(9, 0, 8).ids.to_vector_i64());
  // Validation: every row once; the last batch's padding rows carry label -100.
  EXPECT_EQ(ds.num_val_batches(4), 3);
  Batch v = ds.val_batch(2, 4);
  const auto lv = v.labels.to_vector_i64();
  EXPECT_NE(lv[1], kIgnoreIndex);
  EXPECT_EQ(lv[2], kIgnoreIndex);
  EXPECT_EQ(lv[3], kIgnoreIndex);
  unlink(p.c_str());
}

// data.test_fraction: the permutation's tail is a test split, validation the rows before it, the three disjoint and
// covering every row; test_fraction 0 gives exactly the splits (and fingerprint) of a run without it.
TEST(Labelled, TestSplitIsTheTailOfTheHeldOutPermutation) {
  const std::string p = write_file("t.tsv", distinct_rows_tsv());
  LabelledOptions o = tsv_opts(p);
  o.val_fraction = 0.2;
  o.split_seed = 3;
  const LabelledDataset two(o);
  o.test_fraction = 0.1;
  const LabelledDataset three(o);
  EXPECT_EQ(three.num_train(), 35);
  EXPECT_EQ(three.num_val(), 10);
  EXPECT_EQ(three.num_test(), 5);
  EXPECT_EQ(two.num_test(), 0);
  EXPECT_TRUE(contains(three.fingerprint(), ":test=5:")) << three.fingerprint();
  EXPECT_FALSE(contains(two.fingerprint(), ":test=")) << two.fingerprint();
  const std::set<std::string> val = example_keys(three.split("val")), test = example_keys(three.split("test"));
  // The rows are distinct (text and label), so set sizes count rows.
  EXPECT_EQ(val.size(), 10u);
  EXPECT_EQ(test.size(), 5u);
  for (const std::string& k : test) EXPECT_EQ(val.count(k), 0u) << k;
  // The test rows and the validation rows are the last 15 of the permutation that, without a test split, puts its
  // last 10 in validation: the old validation split is the test split plus the last 5 of the new validation split.
  const std::set<std::string> old_val = example_keys(two.split("val"));
  for (const std::string& k : test) EXPECT_EQ(old_val.count(k), 1u) << k;
  // No training sample is a held-out row.
  for (int64_t first = 0; first < 35; first += 5) {
    for (const std::string& k : batch_rows(three.train_batch(1, first, 5)))
      EXPECT_EQ(val.count(k) + test.count(k), 0u) << k;
  }
  EXPECT_TRUE(contains(error_of([&] { (void)three.split("train"); }), "no split 'train'"));
  o.test_fraction = 0.8;
  EXPECT_TRUE(
      contains(error_of([&] { LabelledDataset bad(o); }), "data.val_fraction + data.test_fraction must be < 1"));
  o.test_fraction = 0.01;  // 0.5 of a row
  EXPECT_TRUE(contains(error_of([&] { LabelledDataset bad(o); }), "too few to hold out a fraction 0.01 for test"));
  unlink(p.c_str());
}

TEST(Labelled, ReverseComplementAugmentationFlipsAboutHalfDeterministically) {
  std::string fa0 = "", fa1 = "";
  for (int i = 0; i < 40; ++i) fa0 += ">a\nAAAAAAAC\n", fa1 += ">b\nGGGGGGGT\n";
  const std::string a = write_file("r0.fa", fa0), b = write_file("r1.fa", fa1);
  LabelledOptions o;
  o.format = "fasta";
  o.tokenizer = "dna";
  o.files = {a, b};
  o.rc_augment = true;
  o.val_fraction = 0.25;
  LabelledDataset ds(o);
  Batch x = ds.train_batch(5, 0, 60), y = ds.train_batch(5, 0, 60);
  EXPECT_EQ(x.ids.to_vector_i64(), y.ids.to_vector_i64());
  int flipped = 0;
  const auto ids = x.ids.to_vector_i64();
  const auto lab = x.labels.to_vector_i64();
  for (int r = 0; r < 60; ++r) {  // AAAAAAAC (class 0) reversed and complemented is GTTTTTTT; GGGGGGGT is ACCCCCCC
    EXPECT_EQ(ids[r * 8], lab[r] == 0 ? (ids[r * 8] == kDnaA ? kDnaA : kDnaG) : (ids[r * 8] == kDnaG ? kDnaG : kDnaA));
    flipped += (lab[r] == 0 && ids[r * 8] == kDnaG) || (lab[r] == 1 && ids[r * 8] == kDnaA);
  }
  EXPECT_GT(flipped, 15);
  EXPECT_LT(flipped, 45);
  unlink(a.c_str());
  unlink(b.c_str());
}

TEST(Labelled, TrainerLearnsEcoliPromoters) {
  // The shipped E. coli sigma70 promoter job, unidirectional and shortened to 60 steps (10 warmup) for CI; 20% of the
  // 3,839 sequences held out by the seed. Chance-level MCC is 0; the majority class alone gives 78% accuracy (MCC 0),
  // the untrained model about 40% (MCC < 0) and 20 steps 0.84 / MCC 0.42; 60 steps reach 0.89 / MCC 0.63.
  const std::string dir = test::temp_dir("promoters");
  const std::string args = "train configs/promoters-ecoli.yaml --set run.out_dir=" + dir +
                           " --set model.bidirectional=false --set trainer.max_steps=60 --set scheduler.warmup_steps=10"
                           " --set trainer.eval_every=0 --set logging.progress=false --set checkpoint.every=0"
                           " --set run.device=cpu";
  test::CliResult r = test::run_cli(args);
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t at = r.out.find("eval step 60: ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double acc = std::stod(r.out.substr(r.out.find("accuracy ", at) + 9));
  const double mcc = std::stod(r.out.substr(r.out.find("MCC ", at) + 4));
  std::printf("E. coli promoters, 60 steps: validation accuracy %.4f, MCC %.4f\n", acc, mcc);
  EXPECT_GE(acc, 0.85) << r.out;
  EXPECT_GE(mcc, 0.5) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(Labelled, ClassificationResumeIsBitExact) {
  // 12 steps straight vs 5, stop, resume: identical checkpoints (label batches, reverse-complement augmentation,
  // epochs of the shuffled rows and all), without and with both kinds of dropout (a micro-batch's masks depend on the
  // run's seed and its first sample only). A tiny model keeps it quick.
  for (const std::string drop : {"", " --set model.dropout=0.2 --set model.classifier_dropout=0.3"}) {
    const std::string dir = test::temp_dir("cls_resume");
    const std::string args =
        "train configs/promoters-ecoli.yaml --set model.d_model=16 --set model.n_layer=1"
        " --set trainer.max_steps=12 --set scheduler.warmup_steps=2 --set trainer.eval_every=0"
        " --set trainer.eval_batches=2 --set logging.progress=false --set checkpoint.every=0"
        " --set run.device=cpu" +
        drop + " --set run.out_dir=";
    test::CliResult r = test::run_cli(args + dir);
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string straight = test::keep_copy(test::ckpt(dir, 12));
    std::filesystem::remove_all(dir);
    r = test::run_cli(args + dir + " --stop-at-step 5");
    ASSERT_EQ(r.code, 0) << r.out;
    r = test::run_cli(args + dir);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(contains(r.out, "at step 5")) << r.out;
    test::expect_same_training_state(straight, test::ckpt(dir, 12));
    std::filesystem::remove_all(std::filesystem::path(straight).parent_path());
    std::filesystem::remove_all(dir);
  }
}

TEST(Labelled, ConfigRulesForClassification) {
  const std::string dir = test::temp_dir("cls_rules");
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"configs/promoters-ecoli.yaml --set tokenizer.kind=byte", 3, "data.format fasta needs tokenizer.kind dna"},
      {"configs/promoters-ecoli.yaml --set model.head=lm", 3,
       "data.kind classification trains the sequence_classification head"},
      {"configs/promoters-ecoli.yaml --set data.class_files=data/corpora/promoters/nope.fa", 3,
       "--set data.class_files: no such file 'data/corpora/promoters/nope.fa'"},
      {"configs/sst2.yaml --set data.text_column=content --set run.out_dir=" + dir, 4,
       "data/corpora/sst2/train.tsv:1: no column 'content'"},
      {"configs/tinyshakespeare.yaml --set data.rc_augment=true", 3, "data.rc_augment needs tokenizer.kind dna"},
      {"configs/tinyshakespeare.yaml --set data.test_fraction=0.1", 3,
       "data.test_fraction holds out rows of data.kind classification"},
      {"configs/sst2.yaml --set data.test_fraction=0.1", 3, "a data.val_path run does not split"},
      {"configs/promoters-ecoli.yaml --set data.val_fraction=0.5 --set data.test_fraction=0.5", 3,
       "data.val_fraction + data.test_fraction must be < 1"},
  };
  for (const Case& c : cases) {
    const test::CliResult r = test::run_cli("train " + c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, c.message)) << c.args << "\n" << r.out;
  }
  std::filesystem::remove_all(dir);
}

TEST(DnaText, FastaGenomeAsTokensPlainOrGzip) {
  const std::string plain = write_file("g.fa", ">chr1 first\nACGTacgt\r\nNNRY\n>chr2\nGGCC\n");
  const std::string gz = plain + ".gz";
  ASSERT_EQ(std::system(("gzip -c " + plain + " > " + gz).c_str()), 0);
  TextDataset a(plain, 0.0, 4, "dna"), b(gz, 0.0, 4, "dna");
  EXPECT_EQ(a.size(), 18);  // 12 + EOD + 4 + EOD
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_TRUE(contains(a.fingerprint(), "dna:18:"));
  EXPECT_EQ(a.vocab_size(), 7);
  Batch x = a.train_batch(1, 0, 64);
  for (int64_t v : x.ids.to_vector_i64()) EXPECT_TRUE(v >= kDnaEod && v <= kDnaN) << v;
  const std::string bad = write_file("bad.fa", ">r\nACGT\nACUT\n");
  EXPECT_EQ(error_of([&] { TextDataset(bad, 0.0, 2, "dna"); }),
            "data.path: " + bad + ":3:3: 'U' is not a DNA letter (A C G T, N or an IUPAC ambiguity code)");
  const std::string headerless = write_file("nohdr.fa", "ACGT\n");
  EXPECT_TRUE(contains(error_of([&] { TextDataset(headerless, 0.0, 2, "dna"); }), ":1: sequence before the first '>'"));
  for (auto& f : {plain, gz, bad, headerless}) unlink(f.c_str());
}

TEST(DnaText, PretrainExportAndFineTuneOnPromoters) {
  // The genome LM of configs/dna-ecoli-pretrain.yaml (tiny and short here), exported as a HuggingFace directory,
  // then the promoter classifier starting from its encoder.
  const std::string dir = test::temp_dir("dna_lm");
  const std::string small =
      " --set model.d_model=16 --set model.n_layer=1 --set logging.progress=false"
      " --set run.device=cpu --set trainer.precision=fp32 --set trainer.eval_batches=1";
  test::CliResult r =
      test::run_cli("train configs/dna-ecoli-pretrain.yaml --set run.out_dir=" + dir +
                    " --set data.seq_len=256 --set trainer.max_steps=4 --set scheduler.warmup_steps=1" + small);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "data/corpora/ecoli536/NC_008253.fna.gz (dna tokens; ")) << r.out;
  r = test::run_cli("export " + dir + " --hf " + dir + "/hf");
  ASSERT_EQ(r.code, 0) << r.out;
  r = test::run_cli("train configs/promoters-ecoli.yaml --set run.out_dir=" + dir + "/ft --set model.init_from=" + dir +
                    "/hf --set trainer.max_steps=2 --set scheduler.warmup_steps=1 --set optimizer.lr=1e-7"
                    " --set scheduler.min_lr=0" +
                    small);
  ASSERT_EQ(r.code, 0) << r.out;
  // The fine-tune started from the pretrained encoder (a learning rate of 1e-7 leaves it where it started).
  train::CheckpointData lm = train::load_checkpoint(dir + "/checkpoints/" + train::checkpoint_file_name(4));
  train::CheckpointData ft = train::load_checkpoint(dir + "/ft/checkpoints/" + train::checkpoint_file_name(2));
  const auto e0 = lm.tensors.at("model/backbone.embeddings.weight").to_vector();
  const auto e1 = ft.tensors.at("model/backbone.embeddings.weight").to_vector();
  ASSERT_EQ(e0.size(), e1.size());
  EXPECT_LE(test::rel_l2(e1, e0), 1e-3);
  r = test::run_cli("train configs/promoters-ecoli.yaml --set run.out_dir=" + dir +
                    "/ft2 --set model.init_from=" + dir +
                    "/hf --set trainer.max_steps=2 --set scheduler.warmup_steps=1" + small + " --set model.d_model=32");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(contains(r.out, "model.d_model: 32 here, 16 in the source")) << r.out;
  std::filesystem::remove_all(dir);
}
