// MambaConfig: the architecture of a Mamba-1 language model / encoder, plus reading and writing the two config.json
// dialects found next to published weights:
//   - HuggingFace transformers (model_type "mamba"): hidden_size, state_size, num_hidden_layers, conv_kernel, ...
//   - the original state-spaces/mamba files: d_model, n_layer, vocab_size, ssm_cfg {...}, pad_vocab_size_multiple.
// Defaults are mamba-130m's (docs/DESIGN.md "Published variants" and "Initialisation").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt {

// The normalisation before each block and at the end: RMSNorm (x * rsqrt(mean(x^2) + eps) * w) or LayerNorm (with a
// bias). Spelled "rmsnorm" / "layernorm" in configs.
enum class NormKind : uint8_t { RMSNorm, LayerNorm };
// dt_proj.weight init: Random ~ U(+-dt_rank^-0.5 * dt_scale), or Constant = dt_rank^-0.5 * dt_scale.
// Spelled "random" / "constant" in configs.
enum class DtInit : uint8_t { Random, Constant };

// The weights of a bidirectional layer's reverse direction. Caduceus (BiMamba): its own conv, x_proj, dt_proj, A_log
// and D, sharing in_proj and out_proj with the forward direction. Shared: every mixer weight shared (the first
// bidirectional models of mamba-train; their checkpoints and exports carry no such key and load as Shared).
// Spelled "caduceus" / "shared" in configs.
enum class BiWeights : uint8_t { Caduceus, Shared };

const char* norm_kind_name(NormKind k);
const char* bi_weights_name(BiWeights k);
bool parse_bi_weights(const std::string& name, BiWeights* out);
const char* dt_init_name(DtInit k);
// "rmsnorm" / "layernorm", "random" / "constant"; false when `name` is none of them.
bool parse_norm_kind(const std::string& name, NormKind* out);
bool parse_dt_init(const std::string& name, DtInit* out);

struct MambaConfig {
  // ---- sizes ----
  int64_t vocab_size = 50280;  // rows of the embedding (already padded; see padded_vocab)
  int64_t d_model = 768;
  int64_t n_layer = 24;
  int64_t d_state = 16;  // N
  int64_t d_conv = 4;    // K, causal depthwise conv kernel
  int64_t expand = 2;
  int64_t d_inner = 0;  // 0: expand * d_model (filled by finalize)
  int64_t dt_rank = 0;  // 0: ceil(d_model / 16) (filled by finalize)
  // ---- dt initialisation (docs/DESIGN.md "Initialisation") ----
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double dt_scale = 1.0;
  DtInit dt_init = DtInit::Random;
  // ---- layers ----
  bool conv_bias = true;
  bool proj_bias = false;  // bias on in_proj and out_proj
  double norm_eps = 1e-5;
  NormKind norm = NormKind::RMSNorm;
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  bool bidirectional = false;  // also scan the reversed sequence and add the two outputs (Caduceus' BiMamba)
  BiWeights bidirectional_weights = BiWeights::Caduceus;
  // Reverse-complement equivariance by parameter sharing (Caduceus-PS): the backbone runs on the sequence and on its
  // reverse complement with the same weights; the per-token output is [out(x)_t, flip_channels(out(rc x)_{L-1-t})]
  // (2 d_model channels), so the output for rc(x) is that output reversed in positions and channels.
  // rc_complement[v]: the id of token v's complement (an involution over the whole vocabulary).
  bool rc_equivariant = false;
  std::vector<int64_t> rc_complement;
  int64_t pad_vocab_size_multiple = 8;
  double initializer_range = 0.02;  // std of the embedding init
  int64_t pad_token_id = 0, bos_token_id = 0, eos_token_id = 0;

  // Fill d_inner / dt_rank when 0 and validate every field; mt::Error(Config) naming the field and its value.
  void finalize();
  // Exact trainable parameter count (tied embedding counted once). Uses finalized d_inner / dt_rank (computes the
  // defaults itself when they are still 0).
  int64_t num_parameters() const;
  // raw rounded up to a multiple of pad_vocab_size_multiple (what the state-spaces model does to its vocabulary).
  int64_t padded_vocab(int64_t raw) const;

  // A published variant: "130m", "370m", "790m", "1.4b", "2.8b" (finalized). mt::Error(Usage) for other names.
  static MambaConfig variant(const std::string& name);
};

// Parse a config.json (either dialect, decided by its keys: "hidden_size" or model_type "mamba" -> transformers;
// otherwise "d_model"/"n_layer"/"ssm_cfg" -> state-spaces). Keys missing from the file take the defaults of the
// library that wrote it (transformers: num_hidden_layers 32, use_bias true, initializer_range 0.1, ...;
// state-spaces: d_model 2560, n_layer 64, vocab 50277 padded to 8). Unknown keys are ignored. `where` (usually the
// file path) is named in errors: mt::Error(Checkpoint) for a wrong type / unsupported value, naming the key.
// The result is finalized.
MambaConfig config_from_hf_json(const std::string& json_text, const std::string& where);

// transformers' dialect (model_type "mamba", architectures ["MambaForCausalLM"]), keys sorted, 2-space indent.
// Our extensions "mamba_train_norm" / "mamba_train_bidirectional" are written only when not the default.
std::string config_to_hf_json(const MambaConfig& cfg);

// dir/config.json parsed with config_from_hf_json. A missing / unreadable file is mt::Error(Checkpoint) naming it.
MambaConfig load_hf_config(const std::string& dir);

}  // namespace mt
