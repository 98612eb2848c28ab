// The decoding commands end to end on the CPU: bench decode.
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"

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

}  // namespace

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
}

TEST(CliBenchDecode, BadOptionsAreUsageErrors) {
  CliResult r = run_cli(std::string("bench decode ") + kTinyModel + " --batch 1,x");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "mamba-train: error: --batch: expected a comma-separated list")) << r.out;
  r = run_cli(std::string("bench decode ") + kTinyModel + " --set bidirectional=true --batch 1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "bidirectional")) << r.out;
}
