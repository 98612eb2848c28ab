// Genomics workflows: a fixed held-out split while the seed varies the model (data.split_seed).
#include <filesystem>

#include "test_util.h"
#include "train/config/config.h"
#include "train/task_data.h"

using namespace mt;
using namespace mt::train;

namespace {

TrainConfig promoters(uint64_t seed, int64_t split_seed) {
  return load_train_config_file(test::source_path("configs/promoters-ecoli.yaml"),
                                {"run.seed=" + std::to_string(seed), "data.split_seed=" + std::to_string(split_seed)});
}

std::vector<int64_t> val_labels(const TrainConfig& c) {
  auto t = make_task_data(c);
  std::vector<int64_t> out;
  for (int64_t k = 0; k < t->num_val_batches(16); ++k) {
    const auto l = t->val_batch(k, 16).labels.to_vector_i64();
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

}  // namespace

TEST(Genomics, SplitSeedKeepsTheHeldOutSplitWhileTheRunSeedVaries) {
  const std::string cwd = std::filesystem::current_path().string();
  std::filesystem::current_path(MT_SOURCE_DIR);  // the config names the shipped FASTA files relative to the root
  const auto a = val_labels(promoters(1, 7)), b = val_labels(promoters(2, 7)), c = val_labels(promoters(2, -1)),
             d = val_labels(promoters(2, 2));
  std::filesystem::current_path(cwd);
  EXPECT_EQ(a, b);  // same split_seed: the same held-out rows in the same order
  EXPECT_NE(a, c);  // -1: the split follows run.seed
  EXPECT_EQ(c, d);
}
