// mamba-train info: a model's dimensions, exact parameter count and the peak GPU memory of its training step, for a
// published variant, an HF directory or a training config, with the config's keys overridable by --set.
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/paths.h"
#include "nn/hf_io.h"
#include "train/cli/commands.h"
#include "train/config/config.h"
#include "train/format.h"
#include "train/memory_estimate.h"

namespace mt::train {

namespace {

DType precision_of(const std::string& p) {
  if (p == "fp16") return DType::F16;
  if (p == "fp32") return DType::F32;
  return DType::BF16;
}

}  // namespace

Runner add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model's dimensions, parameter count and training memory estimate");
  struct Opts {
    std::string config, variant = "130m", hf, dtype;
    std::vector<std::string> sets;
    int64_t batch = 8, seq_len = 2048;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("config", o->config, "a training config (YAML) to describe instead of a variant");
  cmd->add_option("--variant", o->variant, "130m | 370m | 790m | 1.4b | 2.8b")->capture_default_str();
  cmd->add_option("--hf", o->hf, "read the model from a HuggingFace directory's config.json instead");
  cmd->add_option("--set", o->sets,
                  "override a config key, e.g. --set model.n_layer=12 --set trainer.chunk_len=65536 (a key without a "
                  "section is a model key: --set n_layer=12)");
  cmd->add_option("--batch", o->batch, "micro-batch size (trainer.micro_batch_size)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", o->seq_len, "sequence length (data.seq_len)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", o->dtype, "activation dtype: bf16 | f16 | f32 (trainer.precision; default bf16)");
  return [o]() {
    std::vector<std::string> sets;
    for (const std::string& s : o->sets) {
      const size_t eq = s.find('=');
      sets.push_back(eq != std::string::npos && s.substr(0, eq).find('.') == std::string::npos ? "model." + s : s);
    }
    if (!o->dtype.empty()) {
      MT_CHECK(o->dtype == "bf16" || o->dtype == "f16" || o->dtype == "f32", ErrorKind::Usage,
               "--dtype must be bf16, f16 or f32, got ", o->dtype);
      sets.insert(sets.begin(), "trainer.precision=" + std::string(o->dtype == "f16"   ? "fp16"
                                                                   : o->dtype == "f32" ? "fp32"
                                                                                       : "bf16"));
    }
    TrainConfig c;
    std::string name;
    if (!o->config.empty()) {
      c = load_train_config_file(o->config, sets);
      name = o->config;
    } else {
      c.model.mamba = o->hf.empty() ? MambaConfig::variant(o->variant) : load_hf_config(shipped_path(o->hf));
      c.trainer.micro_batch_size = o->batch;
      c.data.seq_len = o->seq_len;
      c.trainer.precision = "bf16";
      apply_overrides(c, sets);
      name = o->hf.empty() ? "mamba-" + o->variant : o->hf;
    }
    const MambaConfig& m = c.model.mamba;
    std::printf("model: %s\n", name.c_str());
    std::printf("  d_model %lld  n_layer %lld  d_inner %lld  d_state %lld  d_conv %lld  dt_rank %lld  vocab %lld%s\n",
                (long long)m.d_model, (long long)m.n_layer, (long long)m.d_inner, (long long)m.d_state,
                (long long)m.d_conv, (long long)m.dt_rank, (long long)m.vocab_size,
                m.tie_embeddings ? " (tied)" : " (untied)");
    std::printf("parameters: %s\n", group_thousands(m.num_parameters()).c_str());
    MemoryEstimateInput in;
    in.model = m;
    in.micro_batch = c.trainer.micro_batch_size;
    in.seq_len = c.data.seq_len;
    in.compute = precision_of(c.trainer.precision);
    in.chunk_len = c.trainer.chunk_len;
    in.checkpoint_blocks = c.trainer.activation_checkpointing == "block";
    in.lm = c.model.head == "lm";
    const MemoryEstimate e = estimate_training_memory(in);
    std::printf(
        "peak GPU memory estimate of a training step: micro-batch %lld x length %lld, %s, AdamW with f32 "
        "masters%s%s:\n",
        (long long)in.micro_batch, (long long)in.seq_len, c.trainer.precision.c_str(),
        in.chunk_len > 0 && in.chunk_len < in.seq_len
            ? (", chunks of " + std::to_string(in.chunk_len) + " tokens").c_str()
            : "",
        in.checkpoint_blocks ? ", block checkpointing" : "");
    std::printf("  weights, gradients, optimizer state: %s\n", format_gib(e.weights).c_str());
    std::printf("  activations kept for backward:       %s\n", format_gib(e.activations).c_str());
    if (e.recompute > 0) std::printf("  one block's recompute:               %s\n", format_gib(e.recompute).c_str());
    if (e.boundaries > 0) std::printf("  chunk boundary states:               %s\n", format_gib(e.boundaries).c_str());
    if (e.loss > 0) std::printf("  LM head and loss:                    %s\n", format_gib(e.loss).c_str());
    std::printf("  one layer's backward:                %s\n", format_gib(e.backward).c_str());
    std::printf("  total:                               %s\n", format_gib(e.total()).c_str());
    return 0;
  };
}

}  // namespace mt::train
