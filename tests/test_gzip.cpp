// gzip in every data reader (data/gz_reader.h): a file is gzip when it starts with gzip's magic, whatever its name,
// and a gzip file that is cut short, lacks its trailer, is corrupt or has trailing bytes is refused naming the file,
// in training data of every tokenizer, `prepare`, class files of every format and id files alike.
#include <unistd.h>
#include <zlib.h>

#include <filesystem>

#include "cli_util.h"
#include "data/gz_reader.h"
#include "data/labelled.h"
#include "data/text_dataset.h"
#include "data/token_shards.h"
#include "test_util.h"
#include "train/ids_file.h"

using namespace mt;
using namespace mt::data;
using test::contains;
using test::error_of;
using test::run_cli;

namespace {

// One gzip member of `text` (zlib's deflate with the gzip wrapper, as the gzip tool writes).
std::string gzip(const std::string& text, int level = 6) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&s, text.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  s.avail_in = static_cast<uInt>(text.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

using test::read_bytes;
using test::write_bytes;

// A FASTA text of n records of 200 pseudo-random bases (compresses to a few KiB: truncations land inside the data).
std::string fasta(int n) {
  std::string s;
  uint32_t x = 12345;
  for (int r = 0; r < n; ++r) {
    s += ">r" + std::to_string(r) + "\n";
    for (int i = 0; i < 200; ++i) {
      x = x * 1664525u + 1013904223u;
      s += "ACGT"[x >> 30];
      if (i % 60 == 59) s += '\n';
    }
    s += '\n';
  }
  return s;
}

class Gzip : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir("gzip"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& bytes) {
    const std::string p = dir_ + "/" + name;
    write_bytes(p, bytes);
    return p;
  }
  std::string dir_;
};

}  // namespace

TEST_F(Gzip, ContentIsDecidedByTheMagicNotTheName) {
  const std::string text = fasta(3);
  const std::string gz_txt = file("looks_plain.txt", gzip(text));
  const std::string plain_gz = file("looks_compressed.gz", text);
  EXPECT_TRUE(is_gzip_file(gz_txt));
  EXPECT_FALSE(is_gzip_file(plain_gz));
  EXPECT_EQ(read_content(gz_txt), text);
  EXPECT_EQ(read_content(plain_gz), text);
  // Concatenated members (bgzip, `cat a.gz b.gz`) are one stream; so is an empty member.
  const std::string two = file("two.fa.gz", gzip(text.substr(0, 500)) + gzip("") + gzip(text.substr(500), 9));
  EXPECT_EQ(read_content(two), text);
  EXPECT_EQ(read_content(file("empty.gz", gzip(""))), "");
  EXPECT_EQ(read_content(file("empty.txt", "")), "");
  EXPECT_EQ(peek_content(two, 5), ">r0\nA");
  // Larger than the 64 KiB chunks in both directions (compressed and not).
  std::string big;
  for (int i = 0; i < 40000; ++i) big += std::to_string(i * 7919 % 100003) + (i % 13 ? " " : "\n");
  ASSERT_GT(big.size(), 200000u);
  EXPECT_EQ(read_content(file("big.gz", gzip(big, 1))), big);
  EXPECT_EQ(read_content(file("big.txt", big)), big);
}

TEST_F(Gzip, TruncatedCorruptOrTrailedStreamsAreRefusedNamingTheFile) {
  const std::string z = gzip(fasta(40));
  ASSERT_GT(z.size(), 2000u);
  // Cut anywhere, the 8-byte trailer (CRC-32, length) included: never read as far as it goes.
  for (size_t keep :
       {size_t{2}, size_t{10}, size_t{100}, z.size() / 2, z.size() - 9, z.size() - 8, z.size() - 4, z.size() - 1}) {
    const std::string p = file("cut.fa.gz", z.substr(0, keep));
    const std::string msg = error_of([&] { read_content(p, "data.path"); });
    EXPECT_TRUE(contains(msg, "data.path: " + p + ": ")) << keep << ": " << msg;
    EXPECT_TRUE(contains(msg, keep < 10 ? "gzip" : "truncated gzip data")) << keep << ": " << msg;
  }
  const std::string cut = file("no_trailer.fa.gz", z.substr(0, z.size() - 8));
  EXPECT_EQ(error_of([&] { read_content(cut, "data.path"); }),
            "data.path: " + cut + ": truncated gzip data: the file ends at byte " + std::to_string(z.size() - 8) +
                ", before its gzip stream does (cut short by an interrupted download or copy?)");
  // A flipped bit in the deflate data, a wrong CRC, a wrong length.
  std::string flip = z;
  flip[z.size() / 2] ^= 0x10;
  EXPECT_TRUE(contains(error_of([&] { read_content(file("flip.gz", flip)); }), "flip.gz: corrupt gzip data: "));
  std::string crc = z;
  crc[z.size() - 8] ^= 1;
  EXPECT_TRUE(contains(error_of([&] { read_content(file("crc.gz", crc)); }),
                       "crc.gz: corrupt gzip data: incorrect data check"));
  std::string len = z;
  len[z.size() - 4] ^= 1;
  EXPECT_TRUE(contains(error_of([&] { read_content(file("len.gz", len)); }),
                       "len.gz: corrupt gzip data: incorrect length check"));
  // Bytes after the last member that are not another member.
  EXPECT_EQ(error_of([&] { read_content(file("trail.gz", z + "garbage")); }),
            dir_ + "/trail.gz: " + std::to_string(z.size()) +
                " bytes of gzip data are followed by bytes that are not gzip data (a damaged or wrongly joined file)");
  EXPECT_TRUE(contains(error_of([&] { read_content(file("trail1.gz", z + "x")); }), "followed by bytes"));
  // A missing file and a directory.
  EXPECT_EQ(error_of([&] { read_content(dir_ + "/none.gz", "--input"); }),
            "--input: " + dir_ + "/none.gz: cannot open: No such file or directory");
  EXPECT_TRUE(contains(error_of([&] { read_content(dir_); }), "is a directory"));
}

TEST_F(Gzip, EveryTextTokenizerReadsTheDecompressedContent) {
  // The byte tokenizer used to train on the compressed bytes of a .gz data path.
  std::string text;
  for (int i = 0; i < 300; ++i) text += "line " + std::to_string(i) + " of a small corpus\n";
  const std::string plain = file("corpus.txt", text), gz = file("corpus.txt.gz", gzip(text));
  TextDataset a(plain, 0.1, 16, "byte"), b(gz, 0.1, 16, "byte");
  EXPECT_EQ(a.size(), static_cast<int64_t>(text.size()));
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(a.train_batch(5, 0, 8).ids.to_vector_i64(), b.train_batch(5, 0, 8).ids.to_vector_i64());
  // DNA: the same tokens plain or compressed; cut short, refused (it used to train on the part that decompressed).
  const std::string fa = fasta(40);
  const std::string z = gzip(fa);
  TextDataset c(file("g.fa", fa), 0.1, 16, "dna"), d(file("g.fa.gz", z), 0.1, 16, "dna");
  EXPECT_EQ(c.fingerprint(), d.fingerprint());
  const std::string cut = file("cut.fa.gz", z.substr(0, z.size() / 2));
  const std::string msg = error_of([&] { TextDataset(cut, 0.1, 16, "dna"); });
  EXPECT_TRUE(contains(msg, "data.path: " + cut + ": truncated gzip data")) << msg;
  const std::string no_trailer = file("nt.fa.gz", z.substr(0, z.size() - 8));
  EXPECT_TRUE(contains(error_of([&] { TextDataset(no_trailer, 0.1, 16, "dna"); }), "truncated gzip data"));
  EXPECT_TRUE(contains(error_of([&] { TextDataset(no_trailer, 0.1, 16, "byte"); }), "truncated gzip data"));
}

TEST_F(Gzip, ACompressedTokenShardIsRefusedNotReadAsText) {
  {
    TokenShardWriter w(dir_ + "/s.bin", "byte", 256, kShardNoEod);
    const std::vector<uint8_t> ids(100, 7);
    w.append(ids.data(), ids.size());
    w.finish(dir_ + "/s.bin");
  }
  const std::string gz = file("s.bin.gz", gzip(read_bytes(dir_ + "/s.bin")));
  const std::string msg = error_of([&] { TextDataset(gz, 0.0, 16, "byte"); });
  EXPECT_EQ(msg, "token shard '" + gz +
                     "': gzip-compressed; training memory-maps shards, so decompress it first (gunzip) and give the "
                     ".bin");
}

TEST_F(Gzip, ClassFilesOfEveryFormatAndIdFilesAreDecompressed) {
  // TSV / CSV / JSONL / FASTA class files were never decompressed: with bad_rows: skip a gzipped file became 0
  // examples.
  struct Format {
    std::string format, text;
  };
  const std::vector<Format> formats = {
      {"tsv", "text\tlabel\nab\t0\ncd\t1\nef\t0\ngh\t1\n"},
      {"csv", "text,label\nab,0\n\"c,d\",1\nef,0\ngh,1\n"},
      {"jsonl",
       "{\"text\":\"ab\",\"label\":0}\n{\"text\":\"cd\",\"label\":1}\n{\"text\":\"ef\",\"label\":0}\n"
       "{\"text\":\"gh\",\"label\":1}\n"},
  };
  for (const Format& f : formats) {
    LabelledOptions o;
    o.format = f.format;
    o.text_column = "text";
    o.bad_rows = "skip";
    ReadStats plain_stats, gz_stats;
    const auto plain = read_labelled(o, {file("c." + f.format, f.text)}, &plain_stats);
    const auto gz = read_labelled(o, {file("c." + f.format + ".gz", gzip(f.text))}, &gz_stats);
    ASSERT_EQ(plain.size(), 4u) << f.format;
    ASSERT_EQ(gz.size(), plain.size()) << f.format;
    EXPECT_EQ(gz_stats.skipped, 0) << f.format;
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_EQ(gz[i].ids, plain[i].ids) << f.format;
      EXPECT_EQ(gz[i].label, plain[i].label) << f.format;
    }
    const std::string cut = file("cut." + f.format + ".gz", gzip(f.text).substr(0, 20));
    EXPECT_TRUE(contains(error_of([&] { read_labelled(o, {cut}, nullptr); }), cut + ": truncated gzip data"))
        << f.format;
  }
  LabelledOptions o;
  o.format = "fasta";
  o.tokenizer = "dna";
  const std::string c0 = ">a\nACGT\n>b\nGGCC\n", c1 = ">c\nTTTT\n";
  const auto plain = read_labelled(o, {file("c0.fa", c0), file("c1.fa", c1)}, nullptr);
  const auto gz = read_labelled(o, {file("c0.fa.gz", gzip(c0)), file("c1.fa.gz", gzip(c1))}, nullptr);
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(gz.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(gz[i].ids, plain[i].ids);
  // Token id files of `forward`.
  const std::string ids = "1 2 3\n4 5 6\n";
  EXPECT_EQ(train::read_ids_file(file("ids.txt.gz", gzip(ids)), 10).to_vector_i64(),
            train::read_ids_file(file("ids.txt", ids), 10).to_vector_i64());
}

TEST_F(Gzip, PrepareRefusesATruncatedInputAndWritesNoShard) {
  // `prepare` used to write a shard of the part that decompressed and exit 0.
  const std::string z = gzip(fasta(40));
  const std::string cut = file("cut.fa.gz", z.substr(0, z.size() / 2));
  test::CliResult r = run_cli("prepare --tokenizer dna --input " + cut + " --output " + dir_ + "/g.bin");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --input: " + cut + ": truncated gzip data")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/g.bin"));
  const std::string no_trailer = file("nt.txt.gz", gzip(fasta(40)).substr(0, z.size() - 8));
  r = run_cli("prepare --tokenizer byte --input " + no_trailer + " --output " + dir_ + "/t.bin");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "truncated gzip data")) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/t.bin"));
  // Whatever the name: gzip content named .txt is decompressed, as training reads it.
  const std::string named_txt = file("plain_name.txt", gzip("hello\n"));
  r = run_cli("prepare --tokenizer byte --input " + named_txt + " --output " + dir_ + "/h.bin");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "prepared 6 tokens")) << r.out;
  // No temporary files left behind by the failed runs.
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}
