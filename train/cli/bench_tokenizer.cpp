#include "train/cli/bench_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "data/bpe.h"

namespace mt::train {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int run_tokenizer_bench(const std::string& tokenizer, const std::string& file, int repeats) {
  MT_CHECK(repeats >= 1, ErrorKind::Usage, "bench tokenizer: --repeats must be at least 1");
  std::ifstream in(file, std::ios::binary);
  MT_CHECK(in.good(), ErrorKind::Data, file, ": cannot open: ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  MT_CHECK(!text.empty(), ErrorKind::Data, file, ": empty file");
  const auto t_load = std::chrono::steady_clock::now();
  data::BpeTokenizer probe = data::BpeTokenizer::load(tokenizer);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::printf("bench tokenizer: %s (%lld ids, loaded in %.0f ms) on %s (%zu bytes), %d repeats, one thread\n",
              tokenizer.c_str(), (long long)probe.vocab_size(), load_s * 1e3, file.c_str(), text.size(), repeats);
  std::vector<double> cold, warm;
  size_t ntok = 0;
  for (int r = 0; r < repeats; ++r) {
    data::BpeTokenizer t = data::BpeTokenizer::load(tokenizer);  // empty word cache
    for (std::vector<double>* times : {&cold, &warm}) {          // first pass fills the cache, second reuses it
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<int32_t> ids;
      try {
        ids = t.encode(text);
      } catch (const Error& e) {
        throw Error(e.kind(), str(file, ": ", e.what()));
      }
      times->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      ntok = ids.size();
    }
  }
  const double mb = static_cast<double>(text.size()) / 1e6;
  for (const auto& [name, times] :
       {std::make_pair("empty word cache", &cold), std::make_pair("warm word cache", &warm)}) {
    const double med = median(*times);
    std::printf("%-17s median %.1f ms: %.2f MB/s, %.2f M tokens/s (min %.1f ms, max %.1f ms)\n", name, med * 1e3,
                mb / med, static_cast<double>(ntok) / med / 1e6, *std::min_element(times->begin(), times->end()) * 1e3,
                *std::max_element(times->begin(), times->end()) * 1e3);
  }
  std::printf("%zu tokens: %.4f tokens/byte (%.2f bytes/token)\n", ntok, static_cast<double>(ntok) / text.size(),
              static_cast<double>(text.size()) / ntok);
  return 0;
}

}  // namespace mt::train
