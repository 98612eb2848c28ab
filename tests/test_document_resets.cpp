// Document resets (data.reset_at_document_end): where a document starts is read from the end-of-document token; the
// conv and the scan restart there, so a packed window encodes each document as if alone (model level in f64, and the
// ops with their state carried across chunks); training uses them at FASTA record boundaries, chunked training
// equals whole windows with them, data without the token trains bit for bit as with the key off, and a checkpoint
// written before the key resumes without resets, as it was trained.
#include <filesystem>
#include <fstream>
#include <map>

#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/selective_scan.h"
#include "cli_util.h"
#include "doc_resets_check.h"
#include "test_util.h"
#include "train/ckpt/checkpoint.h"

using namespace mt;
using test::contains;
using test::run_cli;

namespace {

std::vector<double> values(const Tensor& t) { return t.to(DType::F64).contiguous().to_vector(); }

// Concatenation along dim 1 of the CPU tensors in v (as f64 vectors of [B, ., D] rows).
Tensor cat1(const std::vector<Tensor>& v) { return concat(v, 1).contiguous(); }

std::string dna_args(const std::string& out_dir, const std::string& fasta, int64_t steps) {
  return "train configs/tinyshakespeare.yaml --set run.out_dir=" + out_dir + " --set data.path=" + fasta +
         " --set tokenizer.kind=dna --set model.d_model=16 --set model.n_layer=2 --set data.seq_len=48"
         " --set data.val_fraction=0.2 --set trainer.micro_batch_size=2 --set trainer.global_batch_size=4"
         " --set scheduler.warmup_steps=2 --set trainer.eval_every=2 --set trainer.eval_batches=2"
         " --set trainer.log_every=1 --set checkpoint.every=2 --set logging.progress=false --set logging.plot=false"
         " --set run.device=cpu --set trainer.max_steps=" +
         std::to_string(steps);
}

std::map<std::string, std::vector<double>> params_at(const std::string& dir, int64_t step) {
  std::map<std::string, std::vector<double>> out;
  for (auto& kv : train::load_checkpoint(dir + "/checkpoints/" + train::checkpoint_file_name(step)).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first] = kv.second.to_vector();
  return out;
}

// A FASTA file of 40 records of 9 to 30 random bases: a window of 48 tokens holds several record ends.
std::string write_records(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/records.fa";
  std::ofstream f(path);
  Generator g(3);
  const std::vector<int64_t> len = Tensor::randint({40}, g, 9, 31).to_vector_i64();
  const std::vector<int64_t> base = Tensor::randint({40 * 30}, g, 0, 4).to_vector_i64();
  for (int64_t r = 0; r < 40; ++r) {
    f << ">r" << r << "\n";
    for (int64_t i = 0; i < len[r]; ++i) f << "ACGT"[base[r * 30 + i]];
    f << "\n";
  }
  return path;
}

}  // namespace

TEST(DocumentResets, StartsFollowTheEndOfDocumentToken) {
  const Tensor ids = Tensor::from_vector_i64({4, 1, 5, 1, 1, 6, 7, 8, 9, 1}, {2, 5});
  const std::vector<double> s = values(data::document_starts(ids, 1));
  // Row 0: ends at 1 and 3, so documents start at 2 and 4; row 1: the end at its last position starts nothing.
  EXPECT_EQ(s, (std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 0}));
  EXPECT_FALSE(data::document_starts(ids, -1).defined());                                        // no such token
  EXPECT_FALSE(data::document_starts(Tensor::from_vector_i64({3, 3, 1}, {1, 3}), 1).defined());  // only at the end
}

TEST(DocumentResets, EachDocumentOfAWindowIsEncodedAsIfAlone) {
  test::check_documents_read_alone(Device::cpu(), DType::F64, 1e-12);
}

TEST(DocumentResets, ConvAndScanCarriedAcrossChunksEqualOneCall) {
  // The ops in f64 with document starts near every chunk boundary: run in two pieces with the conv's final_state
  // and the scan's last_state carried, they equal one call, for every split point.
  const int64_t B = 2, L = 11, D = 3, N = 2, K = 4;
  Generator g(5);
  const Tensor x = Tensor::randn({B, L, D}, g, 0.0, 1.0, DType::F64),
               w = Tensor::randn({D, K}, g, 0.0, 1.0, DType::F64);
  const Tensor u = Tensor::randn({B, L, D}, g, 0.0, 1.0, DType::F64),
               delta = Tensor::randn({B, L, D}, g, 0.0, 1.0, DType::F64);
  const Tensor Bm = Tensor::randn({B, L, N}, g, 0.0, 1.0, DType::F64),
               Cm = Tensor::randn({B, L, N}, g, 0.0, 1.0, DType::F64);
  const Tensor A = Tensor::from_vector({-1.0, -2.0, -0.5, -1.5, -0.7, -3.0}, {D, N}, DType::F64);
  const Tensor init_conv = Tensor::randn({B, K - 1, D}, g, 0.0, 1.0, DType::F64),
               init_ssm = Tensor::randn({B, D, N}, g, 0.0, 1.0, DType::F64);
  std::vector<double> r(B * L, 0.0);
  for (int64_t t : {3, 5, 6, 10}) r[t] = 1.0;  // row 0
  r[L] = r[L + 8] = 1.0;                       // row 1: at t = 0 (the initial states dropped) and 8
  const Tensor reset = Tensor::from_vector(r, {B, L}, DType::I32);
  const CausalConv1dOut conv = causal_conv1d(x, w, Tensor(), init_conv, true, reset);
  const SelectiveScanOut scan =
      selective_scan(u, delta, A, Bm, Cm, Tensor(), Tensor(), Tensor(), true, init_ssm, Tensor(), reset);
  for (int64_t s = 1; s < L; ++s) {
    auto piece = [&](const Tensor& t, int64_t a, int64_t e) { return slice(t, 1, a, e).contiguous(); };
    const CausalConv1dOut c1 = causal_conv1d(piece(x, 0, s), w, Tensor(), init_conv, true, piece(reset, 0, s));
    const CausalConv1dOut c2 = causal_conv1d(piece(x, s, L), w, Tensor(), c1.final_state, true, piece(reset, s, L));
    EXPECT_LE(test::tolerance_ratio(values(cat1({c1.y, c2.y})), values(conv.y), 1e-13, 1e-13), 1.0) << "split " << s;
    EXPECT_LE(test::tolerance_ratio(values(c2.final_state), values(conv.final_state), 1e-13, 1e-13), 1.0) << s;
    const SelectiveScanOut s1 =
        selective_scan(piece(u, 0, s), piece(delta, 0, s), A, piece(Bm, 0, s), piece(Cm, 0, s), Tensor(), Tensor(),
                       Tensor(), true, init_ssm, Tensor(), piece(reset, 0, s));
    const SelectiveScanOut s2 =
        selective_scan(piece(u, s, L), piece(delta, s, L), A, piece(Bm, s, L), piece(Cm, s, L), Tensor(), Tensor(),
                       Tensor(), true, s1.last_state, Tensor(), piece(reset, s, L));
    EXPECT_LE(test::tolerance_ratio(values(cat1({s1.y, s2.y})), values(scan.y), 1e-13, 1e-13), 1.0) << "split " << s;
  }
  // A reset on the last K-1 steps hides the rows before it from the next chunk: row 0's final state keeps only
  // time 10 (a document starts there), row 1's all three rows (its last start is at 8 <= L - 3).
  const std::vector<double> fs = values(conv.final_state), xv = values(x);
  for (int64_t d = 0; d < D; ++d) {
    EXPECT_EQ(fs[0 * D + d], 0.0);
    EXPECT_EQ(fs[1 * D + d], 0.0);
    EXPECT_EQ(fs[2 * D + d], xv[(10) * D + d]);
    for (int64_t j = 0; j < K - 1; ++j) EXPECT_EQ(fs[((K - 1) + j) * D + d], xv[(L + L - (K - 1) + j) * D + d]);
  }
}

TEST(DocumentResets, TrainingUsesThemAndDataWithoutTheTokenTrainsAsBefore) {
  const std::string root = test::temp_dir("docreset");
  const std::string fasta = write_records(root);
  // FASTA records: resets change the training; chunked training (chunks of 13, not dividing 48) follows whole
  // windows with them.
  test::CliResult r = run_cli(dna_args(root + "/on", fasta, 4));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "documents: end-of-document token 1; every layer's state restarts after it")) << r.out;
  r = run_cli(dna_args(root + "/off", fasta, 4) + " --set data.reset_at_document_end=false");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto on = params_at(root + "/on", 4), off = params_at(root + "/off", 4);
  EXPECT_NE(on, off);
  r = run_cli(dna_args(root + "/chunked", fasta, 4) + " --set trainer.chunk_len=13");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto chunked = params_at(root + "/chunked", 4);
  for (auto& kv : on) EXPECT_LE(test::tolerance_ratio(chunked.at(kv.first), kv.second, 1e-6, 1e-4), 1.0) << kv.first;
  // Byte text has no end-of-document token: the key changes nothing, bit for bit.
  const std::string text_args =
      " --set model.d_model=16 --set model.n_layer=2 --set data.seq_len=32"
      " --set trainer.micro_batch_size=2 --set trainer.global_batch_size=2"
      " --set trainer.max_steps=3 --set scheduler.warmup_steps=1 --set checkpoint.every=3 --set trainer.eval_every=3"
      " --set trainer.eval_batches=1 --set logging.progress=false --set logging.plot=false"
      " --set run.device=cpu";
  r = run_cli("train configs/tinyshakespeare.yaml --set run.out_dir=" + root + "/text_on" + text_args);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("train configs/tinyshakespeare.yaml --set run.out_dir=" + root + "/text_off" + text_args +
              " --set data.reset_at_document_end=false");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(params_at(root + "/text_on", 3), params_at(root + "/text_off", 3));
  std::filesystem::remove_all(root);
}

TEST(DocumentResets, ACheckpointFromBeforeTheKeyResumesWithoutResets) {
  // A run trained without resets, its step-2 checkpoint's config stripped of the key (as an older mamba-train wrote
  // it): resuming it with the default config keeps resets off and continues that run bit for bit.
  const std::string root = test::temp_dir("docreset_old");
  const std::string fasta = write_records(root);
  const std::string dir = root + "/run";
  test::CliResult r = run_cli(dna_args(dir, fasta, 4) + " --set data.reset_at_document_end=false");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto straight = params_at(dir, 4);
  const std::string ck2 = dir + "/checkpoints/" + train::checkpoint_file_name(2);
  train::CheckpointData d = train::load_checkpoint(ck2);
  std::string yaml, line;
  std::istringstream in(d.strings["config_yaml"]);
  int dropped = 0;
  while (std::getline(in, line)) {
    if (line.rfind("  reset_at_document_end:", 0) == 0) {
      ++dropped;
      continue;
    }
    yaml += line + "\n";
  }
  ASSERT_EQ(dropped, 1);
  d.strings["config_yaml"] = yaml;
  std::filesystem::remove(dir + "/checkpoints/" + train::checkpoint_file_name(4));
  std::filesystem::remove(dir + "/checkpoints/" + train::checkpoint_file_name(4) + ".sha256");
  std::filesystem::remove(ck2);
  std::filesystem::remove(ck2 + ".sha256");
  train::save_checkpoint(dir + "/checkpoints", 2, d, 10);
  r = run_cli(dna_args(dir, fasta, 4));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "data.reset_at_document_end: false (the checkpoint was written before the key")) << r.out;
  EXPECT_FALSE(contains(r.out, "config changes since the checkpoint")) << r.out;
  EXPECT_EQ(params_at(dir, 4), straight);
  std::filesystem::remove_all(root);
}
