// mamba-train info: published variant dimensions, exact parameter count and an activation-memory estimate.
#include <cmath>
#include <cstdio>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/paths.h"
#include "nn/config.h"
#include "train/cli/commands.h"
#include "train/config/overrides.h"

namespace mt::train {

namespace {

// Bytes kept for backward per token and layer by our ops (see nn/mamba.cpp for what each op saves):
//   residual stream f32 (norm backward): 4d; in_proj input: a*d; x and z halves: 2a*di; conv output: a*di;
//   dt: a*R; B and C: 2a*N; delta: a*di; scan output (out_proj input): a*di.
double layer_bytes_per_token(const MambaConfig& c, double a) {
  return 4.0 * c.d_model + a * (c.d_model + 5.0 * c.d_inner + c.dt_rank + 2.0 * c.d_state);
}

std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

Runner add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model variant's dimensions, parameter count and memory estimate");
  struct Opts {
    std::string variant = "130m";
    std::string hf;
    std::vector<std::string> sets;
    int64_t batch = 8, seq_len = 2048;
    std::string dtype = "bf16";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--variant", o->variant, "130m | 370m | 790m | 1.4b | 2.8b")->capture_default_str();
  cmd->add_option("--hf", o->hf, "read the config from a HuggingFace directory instead");
  cmd->add_option("--set", o->sets, "override a field, e.g. --set n_layer=12");
  cmd->add_option("--batch", o->batch, "batch size for the memory estimate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", o->seq_len, "sequence length for the memory estimate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", o->dtype, "activation dtype for the estimate: bf16 | f16 | f32")->capture_default_str();
  return [o]() {
    MambaConfig c = o->hf.empty() ? MambaConfig::variant(o->variant) : load_hf_config(shipped_path(o->hf));
    apply_config_overrides(c, o->sets);
    c.finalize();
    const DType dt = dtype_from_name(o->dtype);
    MT_CHECK(dt == DType::BF16 || dt == DType::F16 || dt == DType::F32, ErrorKind::Usage,
             "--dtype must be bf16, f16 or f32, got ", o->dtype);
    const double a = static_cast<double>(dtype_size(dt));
    const int64_t params = c.num_parameters();
    std::printf("model: %s\n", o->hf.empty() ? ("mamba-" + o->variant).c_str() : o->hf.c_str());
    std::printf("  d_model %lld  n_layer %lld  d_inner %lld  d_state %lld  d_conv %lld  dt_rank %lld  vocab %lld%s\n",
                (long long)c.d_model, (long long)c.n_layer, (long long)c.d_inner, (long long)c.d_state,
                (long long)c.d_conv, (long long)c.dt_rank, (long long)c.vocab_size,
                c.tie_embeddings ? " (tied)" : " (untied)");
    std::printf("parameters: %s\n", group_thousands(params).c_str());
    const double tokens = static_cast<double>(o->batch) * static_cast<double>(o->seq_len);
    const double per_layer = layer_bytes_per_token(c, a) * tokens;
    const double layers = per_layer * static_cast<double>(c.n_layer);
    const double logits = tokens * static_cast<double>(c.vocab_size) * (a + 4.0);      // logits + f32 softmax grad
    const double weights = static_cast<double>(params) * (4.0 + 4.0 + 4.0 + 4.0 + a);  // master, grad, m, v, cast
    std::printf("memory estimate for batch %lld x length %lld, %s activations, AdamW with f32 masters:\n",
                (long long)o->batch, (long long)o->seq_len, o->dtype.c_str());
    std::printf("  weights + grads + optimizer state: %s\n", gib(weights).c_str());
    std::printf("  activations kept for backward:     %s (%s per layer)\n", gib(layers).c_str(),
                gib(per_layer).c_str());
    std::printf("  logits and their gradient:         %s\n", gib(logits).c_str());
    std::printf("  total (before allocator overhead): %s\n", gib(weights + layers + logits).c_str());
    return 0;
  };
}

}  // namespace mt::train
