// mamba-train generate RUN_DIR|CHECKPOINT|--hf DIR (--prompt TEXT | --prompt-ids FILE): new tokens from a language
// model, the prompt in parallel and then one recurrent step per token (nn/generate.h). --prompt streams the text
// (the model's tokenizer: byte, DNA or BPE); --prompt-ids prints exactly one line of new token ids per prompt.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/sampling.h"
#include "nn/generate.h"
#include "train/cli/commands.h"
#include "train/ids_file.h"
#include "train/inference.h"
#include "train/text_codec.h"

namespace mt::train {

namespace {

void write_out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

Runner add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate",
                                 "Generate from a language model: --prompt TEXT streams the continuation, --prompt-ids "
                                 "FILE prints one line of new token ids per prompt");
  struct Opts {
    std::string model, hf, prompt, prompt_ids, device = "auto", dtype;
    std::vector<std::string> set;
    int64_t max_new_tokens = 256, top_k = 0, batch_size = 64;
    double temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("model", o->model,
                  "run directory or checkpoint directory (its newest valid checkpoint), or a checkpoint file");
  cmd->add_option("--hf", o->hf, "instead: a directory written by `mamba-train export` (or a HuggingFace Mamba LM)");
  auto* prompt = cmd->add_option("--prompt", o->prompt, "text to continue (the model's tokenizer); the text streams");
  auto* ids = cmd->add_option("--prompt-ids", o->prompt_ids,
                              "file of prompts, one per line as space-separated token ids (lengths may differ), "
                              "decoded together; prints one line of new token ids per prompt");
  prompt->excludes(ids);
  ids->excludes(prompt);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "new tokens per prompt at most")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--temperature", o->temperature, "softmax temperature; 0 is greedy")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "sample among the k most likely tokens (0: off)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "sample among the most likely tokens holding this probability (1: off)")
      ->capture_default_str();
  cmd->add_option("--repetition-penalty", o->repetition_penalty,
                  "divide the positive logits of tokens already in the text by this (multiply the negative ones)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed of the sampling")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "compute dtype: f32 | bf16 | f16 | f64 (default bf16 on CUDA, f32 on the CPU)");
  cmd->add_option("--batch-size", o->batch_size, "--prompt-ids: prompts decoded together at most")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--set", o->set,
                  "override a data setting of the model's run, e.g. --set tokenizer.kind=byte (tokenizer.* and "
                  "data.* keys)");
  return [o, prompt, ids]() {
    MT_CHECK(prompt->count() + ids->count() == 1, ErrorKind::Usage,
             "generate: give --prompt TEXT or --prompt-ids FILE");
    kernels::sample_check_options(o->temperature, o->top_k, o->top_p, o->repetition_penalty);
    const Device dev = resolve_device(o->device);
    const DType cd = o->dtype.empty() ? (dev.is_cuda() ? DType::BF16 : DType::F32) : dtype_from_name(o->dtype);
    MT_CHECK(is_floating(cd), ErrorKind::Usage, "--dtype must be f32, bf16, f16 or f64, got ", o->dtype);
    InferenceModel m = load_inference_model(o->model, o->hf, o->set, dev);
    MT_CHECK(m.lm != nullptr, ErrorKind::Usage, "generate needs a language model (model.head lm); ", m.source,
             " is a classifier");
    MT_CHECK(m.cfg.trainer.objective != "mlm", ErrorKind::Usage, m.source,
             " was trained as a masked language model (trainer.objective mlm): it predicts masked tokens from "
             "their context, not the next token");
    if (cd == DType::F64) m.lm->to(DType::F64);
    TextCodec codec(m.cfg);

    nn::GenerateOptions go;
    go.max_new_tokens = o->max_new_tokens;
    go.sampling.temperature = o->temperature;
    go.sampling.top_k = o->top_k;
    go.sampling.top_p = o->top_p;
    go.sampling.repetition_penalty = o->repetition_penalty;
    go.sampling.seed = o->seed;
    go.eos_token_id = codec.eos();
    go.compute_dtype = cd;
    go.max_batch = o->batch_size;
    nn::GenerateReport report;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t n_prompts = 1;
    if (ids->count()) {
      const auto prompts = read_prompt_ids_file(o->prompt_ids, m.mamba().vocab_size);
      n_prompts = static_cast<int64_t>(prompts.size());
      const auto out = nn::generate(*m.lm, dev, prompts, go, &report);
      for (const auto& row : out) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) line += (i ? " " : "") + std::to_string(row[i]);
        write_out(line + "\n");
      }
    } else {
      std::vector<int64_t> p = codec.encode(o->prompt);
      if (p.empty()) {
        MT_CHECK(codec.eos() >= 0, ErrorKind::Usage,
                 "--prompt is empty, and a byte model has no start token: give at least one character");
        p.push_back(codec.eos());  // a new document starts after the end-of-sequence token
      }
      write_out(o->prompt);
      go.poll_every = 8;  // stream in small pieces
      go.on_tokens = [&](size_t, const std::vector<int64_t>& t) { write_out(codec.feed(t)); };
      nn::generate(*m.lm, dev, {p}, go, &report);
      write_out(codec.finish() + "\n");
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "generate: %lld prompt%s, %lld new tokens in %.2f s (%.0f tokens/s), %s on %s; %s\n",
                 (long long)n_prompts, n_prompts == 1 ? "" : "s", (long long)report.new_tokens, secs,
                 static_cast<double>(report.new_tokens) / (secs > 0 ? secs : 1), dtype_name(cd), dev.str().c_str(),
                 report.engine.c_str());
    return 0;
  };
}

}  // namespace mt::train
