// mamba-train bench tokenizer (train/cli/bench_tokenizer.cpp): BPE encoding throughput on a text file.
#pragma once

#include <string>

namespace mt::train {

// Encodes `file` with the tokenizer.json at `tokenizer` `repeats` times (a fresh tokenizer, so an empty word cache,
// each time) and prints MB/s, tokens/s (medians) and tokens per byte. Returns the exit code.
int run_tokenizer_bench(const std::string& tokenizer, const std::string& file, int repeats);

}  // namespace mt::train
