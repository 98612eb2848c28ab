// mamba-train bench CONFIG.yaml | kernels | tokenizer | decode: the step time, tokens/s and peak memory of a config's
// training step (with --breakdown, also where its time goes: train/op_breakdown.h), or the kernel / tokenizer /
// generation benchmarks (bench_kernels.cpp, bench_tokenizer.cpp, bench_decode.cpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "core/paths.h"
#include "train/cli/bench_decode.h"
#include "train/cli/bench_kernels.h"
#include "train/cli/bench_tokenizer.h"
#include "train/cli/commands.h"
#include "train/config/config.h"
#include "train/op_breakdown.h"
#include "train/trainer.h"

namespace mt::train {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time training steps of a config: tokens/s, step time, peak GPU memory");
  struct Opts {
    std::string config;
    std::vector<std::string> set;
    int64_t steps = 10, warmup = 3;
    std::string tokenizer = "data/tokenizers/gpt-neox-20b/tokenizer.json", file = "data/corpora/tinyshakespeare.txt";
    int repeats = 5;
    bool breakdown = false;
    DecodeBenchOptions decode;
    std::string batches = "1,64";
    bool no_graph = false, no_pdl = false, reference = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("config", o->config,
                  "YAML config, `kernels` for the selective-scan kernel benchmark, `tokenizer` for BPE encoding "
                  "throughput, or `decode` for generation throughput")
      ->required();
  cmd->add_option("--set", o->set, "override one key (repeatable); bench decode: a model field, e.g. n_layer=2");
  cmd->add_flag("--breakdown", o->breakdown,
                "after the timed steps, as many again with every op's kernels timed: ms per step by op class");
  cmd->add_option("--steps", o->steps, "timed steps")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--warmup", o->warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--tokenizer", o->tokenizer, "bench tokenizer: the tokenizer.json")->capture_default_str();
  cmd->add_option("--file", o->file, "bench tokenizer: the text file to encode")->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "bench tokenizer / decode: timed runs (median)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--variant", o->decode.variant, "bench decode: 130m | 370m | 790m | 1.4b | 2.8b")
      ->capture_default_str();
  cmd->add_option("--batch", o->batches, "bench decode: batch sizes, comma-separated")->capture_default_str();
  cmd->add_option("--prompt-len", o->decode.prompt_len, "bench decode: prompt tokens per row")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--new-tokens", o->decode.new_tokens, "bench decode: new tokens per row")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--device", o->decode.device, "bench decode: auto | cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--dtype", o->decode.dtype,
                  "bench decode: f32 | bf16 | f16 | f64 (default bf16 on CUDA, f32 on the CPU)");
  cmd->add_flag("--no-cuda-graph", o->no_graph, "bench decode: launch each step's kernels instead of a CUDA graph");
  cmd->add_flag("--no-pdl", o->no_pdl, "bench decode: no programmatic dependent launch between the step's kernels");
  cmd->add_flag("--reference", o->reference, "bench decode: the model's forward per token instead of the fused step");
  cmd->add_flag("--check", o->decode.check,
                "bench decode: compare greedy tokens with the argmax of the parallel forward (first rows and tokens)");
  cmd->add_option("--temperature", o->decode.temperature, "bench decode: 0 is greedy; above 0 samples")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  cmd->add_option("--top-k", o->decode.top_k, "bench decode: sample among the k likeliest tokens (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 31));
  cmd->add_option("--top-p", o->decode.top_p, "bench decode: nucleus sampling mass (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--empty-kernels", o->decode.engine.empty_kernels,
                  "bench decode: CUDA, GEMV path: empty kernels after each of a layer's kernels (what a kernel "
                  "boundary costs)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{16}));
  cmd->add_option("--gemv-max-batch", o->decode.engine.gemv_max_batch,
                  "bench decode: largest batch for the GEMV kernels on CUDA (above: cuBLAS)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{8}));
  return [o]() {
    if (o->config == "decode") {
      DecodeBenchOptions d = o->decode;
      d.sets = o->set;
      d.batches = parse_batch_list(o->batches);
      d.repeats = o->repeats;
      d.engine.cuda_graph = !o->no_graph;
      d.engine.pdl = !o->no_pdl;
      d.engine.fused = !o->reference;
      return run_decode_bench(d);
    }
    if (o->config == "kernels") return run_kernel_bench();
    if (o->config == "tokenizer")
      return run_tokenizer_bench(shipped_path(o->tokenizer), shipped_path(o->file), o->repeats);
    TrainConfig cfg = load_train_config_file(o->config, o->set);
    cfg.trainer.max_steps = std::max(cfg.trainer.max_steps, o->steps + o->warmup);
    Trainer t(cfg, TrainerOptions{/*write_outputs=*/false, {}});
    const Device dev = t.device();
    const int64_t tokens_per_step = cfg.trainer.global_batch_size * cfg.data.seq_len;
    std::printf("bench: %s: %lld parameters, %s, %s, batch %lld x %lld tokens (micro-batch %lld)\n", o->config.c_str(),
                (long long)t.num_parameters(), dev.str().c_str(), cfg.trainer.precision.c_str(),
                (long long)cfg.trainer.global_batch_size, (long long)cfg.data.seq_len,
                (long long)cfg.trainer.micro_batch_size);
    for (int64_t i = 0; i < o->warmup; ++i) t.train_step();
    synchronize(dev);
    if (dev.is_cuda()) cuda_reset_peak_memory();
    std::vector<double> times;
    int64_t skipped = 0;
    double last_loss = 0;
    for (int64_t i = 0; i < o->steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const StepStats s = t.train_step();
      synchronize(dev);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      skipped += s.skipped;
      last_loss = s.loss;
    }
    const double med = median(times);
    std::printf("step time: median %.2f ms (min %.2f, max %.2f) over %lld steps after %lld warm-up\n", med * 1e3,
                *std::min_element(times.begin(), times.end()) * 1e3,
                *std::max_element(times.begin(), times.end()) * 1e3, (long long)o->steps, (long long)o->warmup);
    std::printf("throughput: %.1f k tokens/s\n", static_cast<double>(tokens_per_step) / med / 1e3);
    if (dev.is_cuda()) {
      const CudaMemoryStats ms = cuda_memory_stats();
      std::printf("peak GPU memory (tensors): %.2f GiB; cached by the allocator: %.2f GiB\n",
                  static_cast<double>(ms.peak_allocated_bytes) / (1 << 30),
                  static_cast<double>(ms.cached_bytes) / (1 << 30));
    }
    std::printf("last loss %.4f; skipped steps %lld\n", last_loss, (long long)skipped);
    if (o->breakdown) {
      // Means over the steps: the per-op times of a step add up, medians would not.
      OpBreakdown timer(dev);
      std::map<std::string, double> op_ms;
      std::map<std::string, int64_t> op_calls;
      double step_ms = 0;
      for (int64_t i = 0; i < o->steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        t.train_step();
        synchronize(dev);
        step_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        for (const auto& kv : timer.collect(&op_calls)) op_ms[kv.first] += kv.second;
      }
      step_ms /= static_cast<double>(o->steps);
      for (auto& kv : op_ms) kv.second /= static_cast<double>(o->steps);
      std::printf("breakdown: mean of %lld steps with each op's kernels timed (%s), %.3f ms per step\n",
                  (long long)o->steps, dev.is_cuda() ? "CUDA events" : "wall clock", step_ms);
      std::printf("  %-52s %10s %7s\n", "class", "ms/step", "%");
      for (const BreakdownRow& r : breakdown_table(op_ms, step_ms))
        std::printf("  %-52s %10.3f %7.1f\n", r.name.c_str(), r.ms, step_ms > 0 ? 100.0 * r.ms / step_ms : 0.0);
      // Which copies, casts and fills outside the ops cost most, by dtypes and shape.
      std::vector<std::pair<double, std::string>> outside;
      for (const auto& kv : op_ms)
        if (kv.first.rfind("tensor_", 0) == 0) outside.emplace_back(kv.second, kv.first);
      std::stable_sort(outside.begin(), outside.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      if (!outside.empty()) {
        std::printf("largest copies / casts / fills outside the ops (ms per step, calls per step):\n");
        for (size_t i = 0; i < outside.size() && i < 8; ++i)
          std::printf("  %10.3f %6.1f  %s\n", outside[i].first,
                      static_cast<double>(op_calls[outside[i].second]) / static_cast<double>(o->steps),
                      outside[i].second.c_str());
      }
    }
    MT_CHECK(std::isfinite(last_loss), ErrorKind::NonFinite, "bench: the loss is ", last_loss);
    return 0;
  };
}

}  // namespace mt::train
