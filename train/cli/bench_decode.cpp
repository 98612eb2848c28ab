#include "train/cli/bench_decode.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "autograd/autograd.h"
#include "autograd/ops/shape_ops.h"
#include "core/error.h"
#include "nn/heads.h"
#include "train/config/config.h"
#include "train/format.h"
#if defined(MT_WITH_CUDA)
#include "core/cuda_context.h"
#endif

namespace mt::train {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Greedy tokens [B, n] of `engine` (after a call) for rows r < R against the argmax of the parallel forward over
// prompt + tokens: prints how many agree and the largest top-2 gap among the positions that do not.
void check_greedy(const nn::MambaLMHeadModel& model, const nn::DecodeEngine& engine, const Tensor& ids, DType cd) {
  const int64_t B = ids.size(0), L = ids.size(1), R = std::min<int64_t>(B, 4);
  const int64_t m = std::min<int64_t>(engine.generated(), 64), V = model.config().vocab_size;
  const std::vector<int64_t> toks = engine.tokens(0, m);
  const std::vector<int64_t> prompt = ids.to_vector_i64();
  std::vector<int64_t> seq;
  for (int64_t r = 0; r < R; ++r) {
    seq.insert(seq.end(), prompt.begin() + r * L, prompt.begin() + (r + 1) * L);
    seq.insert(seq.end(), toks.begin() + r * m, toks.begin() + r * m + m - 1);
  }
  const int64_t T = L + m - 1;
  NoGradGuard ng;
  nn::ForwardOptions fo;
  fo.compute_dtype = cd;
  const Tensor logits = model.forward(Tensor::from_vector_i64(seq, {R, T}).to(ids.device()), fo).logits;
  const std::vector<double> lg = slice(logits, 1, L - 1, T).to(DType::F32).to_vector();  // [R, m, V]
  int64_t equal = 0;
  double worst_gap = 0.0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t s = 0; s < m; ++s) {
      const double* row = &lg[(r * m + s) * V];
      const int64_t best = std::max_element(row, row + V) - row, tok = toks[r * m + s];
      if (tok == best) {
        ++equal;
      } else {
        worst_gap = std::max(worst_gap, row[best] - row[tok]);
      }
    }
  std::printf("  greedy check: %lld of %lld tokens (rows 0-%lld, first %lld each) are the parallel forward's argmax",
              (long long)equal, (long long)(R * m), (long long)(R - 1), (long long)m);
  if (equal < R * m) std::printf("; the others trail it by at most %.4g (logit units)", worst_gap);
  std::printf("\n");
}

}  // namespace

std::vector<int64_t> parse_batch_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MT_CHECK(used == item.size() && !item.empty() && v >= 1, ErrorKind::Usage,
             "--batch: expected a comma-separated list of positive integers, got '", s, "'");
    out.push_back(v);
  }
  MT_CHECK(!out.empty(), ErrorKind::Usage, "--batch: expected at least one batch size");
  return out;
}

int run_decode_bench(const DecodeBenchOptions& o) {
  MT_CHECK(o.prompt_len >= 1 && o.new_tokens >= 1 && o.repeats >= 1, ErrorKind::Usage,
           "bench decode: --prompt-len, --new-tokens and --repeats must be >= 1");
  const Device dev = resolve_device(o.device);
  const DType cd = o.dtype.empty() ? (dev.is_cuda() ? DType::BF16 : DType::F32) : dtype_from_name(o.dtype);
  MT_CHECK(!o.check || o.temperature == 0.0, ErrorKind::Usage, "bench decode: --check needs greedy (--temperature 0)");
  MT_CHECK(is_floating(cd), ErrorKind::Usage, "bench decode: --dtype must be f32, bf16, f16 or f64, got ", o.dtype);
  // The variant, then --set keys of the config schema (a key without a section is a model key, as for `info`);
  // d_inner and dt_rank follow d_model unless set.
  TrainConfig tc;
  tc.model.mamba = MambaConfig::variant(o.variant);
  tc.model.mamba.d_inner = 0;
  tc.model.mamba.dt_rank = 0;
  std::vector<std::string> sets;
  for (const std::string& s : o.sets) {
    const size_t eq = s.find('=');
    sets.push_back(eq != std::string::npos && s.substr(0, eq).find('.') == std::string::npos ? "model." + s : s);
  }
  apply_overrides(tc, sets);
  const MambaConfig cfg = tc.model.mamba;

  nn::MambaLMHeadModel model(cfg);
  Generator gen(0);
  model.init_parameters(gen);
  if (cd == DType::F64) model.to(DType::F64);
  model.to(dev);
  std::string where = dev.str();
#if defined(MT_WITH_CUDA)
  if (dev.is_cuda()) where += " (" + CudaContext::get().describe() + ")";
#endif
  std::printf(
      "bench decode: mamba-%s%s with random weights (%s parameters), %s on %s; prompt %lld tokens, %lld new "
      "tokens per row, %s; median of %d calls after one untimed\n",
      o.variant.c_str(), o.sets.empty() ? "" : " (overridden)", group_thousands(model.num_parameters()).c_str(),
      dtype_name(cd), where.c_str(), (long long)o.prompt_len, (long long)o.new_tokens,
      o.temperature == 0.0
          ? "greedy"
          : str("sampled (temperature ", o.temperature, ", top-k ", o.top_k, ", top-p ", o.top_p, ")").c_str(),
      o.repeats);
  std::fflush(stdout);

  for (int64_t B : o.batches) {
    nn::DecodeEngineOptions eo = o.engine;
    eo.batch = B;
    eo.max_new_tokens = o.new_tokens;
    eo.compute_dtype = cd;
    eo.sampling = nn::SamplingConfig{};
    eo.sampling.temperature = o.temperature;
    eo.sampling.top_k = o.top_k;
    eo.sampling.top_p = o.top_p;
    nn::DecodeEngine engine(model, dev, eo);
    Generator pg(static_cast<uint64_t>(B));
    const Tensor ids = Tensor::randint({B, o.prompt_len}, pg, 0, cfg.vocab_size, DType::I64, dev);
    std::vector<int64_t> rows(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) rows[b] = b;
    std::vector<double> total, prompt;
    for (int r = 0; r <= o.repeats; ++r) {
      synchronize(dev);
      const auto t0 = std::chrono::steady_clock::now();
      engine.prefill(ids, rows);
      synchronize(dev);
      const double tp = seconds_since(t0);
      engine.step(o.new_tokens - 1);
      synchronize(dev);
      const double tt = seconds_since(t0);
      if (r == 0) continue;  // warm-up: allocations, cuBLAS heuristics, graph capture
      total.push_back(tt);
      prompt.push_back(tp);
    }
    // The median call, and its own prompt / step split.
    std::vector<size_t> order(total.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return total[a] < total[b]; });
    const size_t mid = order[order.size() / 2];
    const double per_step = o.new_tokens > 1 ? (total[mid] - prompt[mid]) / static_cast<double>(o.new_tokens - 1) : 0;
    std::printf(
        "decode batch %lld: %.0f new tokens/s (%lld x %lld tokens in %.4f s; prompt %.2f ms, %.1f us per "
        "step); %s\n",
        (long long)B, static_cast<double>(B * o.new_tokens) / total[mid], (long long)B, (long long)o.new_tokens,
        total[mid], prompt[mid] * 1e3, per_step * 1e6, engine.describe().c_str());
    if (o.check) check_greedy(model, engine, ids, cd);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace mt::train
