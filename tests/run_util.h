// Helpers for tests that train through the binary: a small LM run, run-directory paths, and comparing the training
// state of two checkpoints.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "train/ckpt/checkpoint.h"

namespace mt::test {

// A small byte-level LM on the shipped corpus: a few CPU seconds for tens of steps; checkpoints every 4 steps.
inline std::string small_lm_args(const std::string& out_dir, int64_t max_steps) {
  return "train configs/tinyshakespeare.yaml --set run.out_dir=" + out_dir +
         " --set model.d_model=32 --set model.n_layer=2 --set data.seq_len=32 --set trainer.micro_batch_size=4"
         " --set trainer.global_batch_size=8 --set scheduler.warmup_steps=3 --set trainer.eval_every=5"
         " --set trainer.eval_batches=2 --set trainer.log_every=2 --set checkpoint.every=4 --set "
         "checkpoint.keep_last=10"
         " --set logging.progress=false --set run.device=cpu --set trainer.max_steps=" +
         std::to_string(max_steps);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string ckpt(const std::string& out_dir, int64_t step) {
  return out_dir + "/checkpoints/" + train::checkpoint_file_name(step);
}

// The JSON objects of a JSON-lines file; a line that does not parse fails the test.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << path << ": not JSON: " << line;
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

// A copy of a checkpoint file and its manifest in a new temporary directory (the run directory may then be removed
// and trained again); returns the copy's path.
inline std::string keep_copy(const std::string& ckpt_path) {
  char tmpl[] = "/tmp/mt_kept_XXXXXX";
  const std::string dir = mkdtemp(tmpl) ? tmpl : "/tmp";
  const std::string name = ckpt_path.substr(ckpt_path.rfind('/') + 1), copy = dir + "/" + name;
  for (const char* suffix : {"", ".sha256"}) {
    std::ifstream in(ckpt_path + suffix, std::ios::binary);
    std::ofstream(copy + suffix, std::ios::binary) << in.rdbuf();
  }
  return copy;
}

// Two checkpoints hold the same training state: every tensor, integer, float and string bit for bit, except the
// wall-clock run/elapsed_s.
inline void expect_same_training_state(const std::string& a_path, const std::string& b_path) {
  train::CheckpointData a = train::load_checkpoint(a_path), b = train::load_checkpoint(b_path);
  a.floats.erase("run/elapsed_s");
  b.floats.erase("run/elapsed_s");
  EXPECT_EQ(a.ints, b.ints);
  EXPECT_EQ(a.strings, b.strings);
  ASSERT_EQ(a.floats.size(), b.floats.size());
  for (auto& kv : a.floats) {
    ASSERT_TRUE(b.floats.count(kv.first)) << kv.first;
    EXPECT_EQ(std::memcmp(&kv.second, &b.floats.at(kv.first), sizeof(double)), 0) << kv.first;
  }
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto& kv : a.tensors) {
    ASSERT_TRUE(b.tensors.count(kv.first)) << kv.first;
    const Tensor& x = kv.second;
    const Tensor& y = b.tensors.at(kv.first);
    ASSERT_EQ(x.shape(), y.shape()) << kv.first;
    ASSERT_EQ(x.dtype(), y.dtype()) << kv.first;
    const Tensor xc = x.contiguous(), yc = y.contiguous();
    EXPECT_EQ(std::memcmp(xc.data_ptr(), yc.data_ptr(), xc.nbytes()), 0) << kv.first;
  }
}

}  // namespace mt::test
