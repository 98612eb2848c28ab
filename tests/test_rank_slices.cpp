// Per-rank sharding of the training stream (train/task_data.h rank_micro_batches): every world size reads exactly
// the micro-batches of one process, each once, and rank r's samples are the batches a single process would build.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "train/task_data.h"

namespace mt::train {
namespace {

TEST(RankSlices, RanksTogetherReadTheSingleProcessMicroBatches) {
  const int64_t G = 24, micro = 2;
  for (int64_t seen : {int64_t{0}, int64_t{48}, int64_t{1000}}) {
    const auto one = rank_micro_batches(seen, G, micro, 0, 1);
    ASSERT_EQ(one.size(), 12u);
    for (size_t a = 0; a < one.size(); ++a) {
      EXPECT_EQ(one[a].first, seen + static_cast<int64_t>(a) * micro);
      EXPECT_EQ(one[a].count, micro);
    }
    for (int world : {2, 3, 4, 6, 12}) {
      std::vector<MicroBatchSlice> all;
      std::set<int64_t> firsts;
      for (int r = 0; r < world; ++r) {
        const auto mine = rank_micro_batches(seen, G, micro, r, world);
        EXPECT_EQ(static_cast<int64_t>(mine.size()), G / (micro * world)) << "world " << world << " rank " << r;
        for (const auto& m : mine) {
          all.push_back(m);
          EXPECT_TRUE(firsts.insert(m.first).second) << "sample " << m.first << " read twice (world " << world << ")";
        }
      }
      ASSERT_EQ(all.size(), one.size()) << "world " << world;
      for (size_t a = 0; a < one.size(); ++a) {  // rank-major order is the single-process order
        EXPECT_EQ(all[a].first, one[a].first) << "world " << world;
        EXPECT_EQ(all[a].count, one[a].count);
      }
    }
  }
}

TEST(RankSlices, IndivisibleBatchOrBadRankIsAConfigError) {
  try {
    rank_micro_batches(0, 24, 4, 0, 4);  // 24 = 6 micro-batches cannot split over 4 ranks
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_NE(std::string(e.what()).find("trainer.global_batch_size (24) must be a multiple of "
                                         "trainer.micro_batch_size (4) x the number of ranks (4)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(rank_micro_batches(0, 8, 2, 2, 2), Error);
  EXPECT_THROW(rank_micro_batches(0, 8, 2, -1, 2), Error);
  EXPECT_THROW(rank_micro_batches(0, 8, 0, 0, 1), Error);
}

}  // namespace
}  // namespace mt::train
