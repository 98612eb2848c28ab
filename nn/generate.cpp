#include "nn/generate.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace mt::nn {

std::vector<std::vector<int64_t>> generate(const MambaLMHeadModel& model, Device dev,
                                           const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& opt,
                                           GenerateReport* report) {
  const MambaConfig& cfg = model.config();
  MT_CHECK(opt.max_batch >= 1 && opt.poll_every >= 1, ErrorKind::Usage,
           "generate: max_batch and poll_every must be "
           ">= 1");
  // Groups of equal length, shortest first; each group in batches of at most max_batch prompts.
  std::map<int64_t, std::vector<size_t>> by_length;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int64_t>& p = prompts[i];
    MT_CHECK(!p.empty(), ErrorKind::Data, "prompt ", i + 1, " is empty");
    for (size_t t = 0; t < p.size(); ++t)
      MT_CHECK(p[t] >= 0 && p[t] < cfg.vocab_size, ErrorKind::Data, "prompt ", i + 1, ", token ", t + 1, ": id ", p[t],
               " is outside the vocabulary [0, ", cfg.vocab_size, ")");
    by_length[static_cast<int64_t>(p.size())].push_back(i);
  }
  std::vector<std::vector<int64_t>> out(prompts.size());
  for (const auto& group : by_length) {
    const int64_t L = group.first;
    const std::vector<size_t>& members = group.second;
    for (size_t first = 0; first < members.size(); first += static_cast<size_t>(opt.max_batch)) {
      const size_t last = std::min(members.size(), first + static_cast<size_t>(opt.max_batch));
      const int64_t B = static_cast<int64_t>(last - first);
      DecodeEngineOptions eo = opt.engine;
      eo.batch = B;
      eo.max_new_tokens = opt.max_new_tokens;
      eo.compute_dtype = opt.compute_dtype;
      eo.sampling = opt.sampling;
      DecodeEngine engine(model, dev, eo);
      std::vector<int64_t> ids, row_ids;
      for (size_t m = first; m < last; ++m) {
        ids.insert(ids.end(), prompts[members[m]].begin(), prompts[members[m]].end());
        row_ids.push_back(static_cast<int64_t>(members[m]));
      }
      engine.prefill(Tensor::from_vector_i64(ids, {B, L}), row_ids);
      std::vector<bool> done(static_cast<size_t>(B), false);
      int64_t seen = 0;  // tokens per row looked at so far
      for (;;) {
        const int64_t have = engine.generated();
        const std::vector<int64_t> toks = engine.tokens(seen, have);
        bool all_done = true;
        for (int64_t b = 0; b < B; ++b) {
          const size_t idx = members[first + static_cast<size_t>(b)];
          std::vector<int64_t> fresh;
          for (int64_t t = seen; t < have && !done[b]; ++t) {
            const int64_t tok = toks[b * (have - seen) + (t - seen)];
            if (tok == opt.eos_token_id) {
              done[b] = true;
              break;
            }
            fresh.push_back(tok);
          }
          out[idx].insert(out[idx].end(), fresh.begin(), fresh.end());
          if (report) report->new_tokens += static_cast<int64_t>(fresh.size());
          if (opt.on_tokens && !fresh.empty()) opt.on_tokens(idx, fresh);
          all_done = all_done && done[b];
        }
        seen = have;
        if (all_done || have == opt.max_new_tokens) break;
        engine.step(std::min(opt.poll_every, opt.max_new_tokens - have));
      }
      if (report) report->engine = engine.describe();
    }
  }
  return out;
}

}  // namespace mt::nn
