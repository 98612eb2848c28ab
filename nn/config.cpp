// MambaConfig: defaults, validation, parameter count, published variants, config.json in both dialects.
#include "nn/config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace mt {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad_field(const std::string& field, const std::string& value, const std::string& rule) {
  throw_error(ErrorKind::Config, str("invalid model config: ", field, " = ", value, " (", rule, ")"));
}
void check_min(const char* field, int64_t v, int64_t lo) {
  if (v < lo) bad_field(field, std::to_string(v), str("must be >= ", lo));
}
void check_positive(const char* field, double v) {
  if (!(v > 0) || !std::isfinite(v)) bad_field(field, str(v), "must be a finite number > 0");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

const char* norm_kind_name(NormKind k) { return k == NormKind::LayerNorm ? "layernorm" : "rmsnorm"; }
const char* dt_init_name(DtInit k) { return k == DtInit::Constant ? "constant" : "random"; }

bool parse_norm_kind(const std::string& name, NormKind* out) {
  if (name == "rmsnorm" || name == "layernorm") {
    *out = name == "layernorm" ? NormKind::LayerNorm : NormKind::RMSNorm;
    return true;
  }
  return false;
}

const char* bi_weights_name(BiWeights k) { return k == BiWeights::Shared ? "shared" : "caduceus"; }

bool parse_bi_weights(const std::string& name, BiWeights* out) {
  if (name == "caduceus" || name == "shared") {
    *out = name == "shared" ? BiWeights::Shared : BiWeights::Caduceus;
    return true;
  }
  return false;
}

bool parse_dt_init(const std::string& name, DtInit* out) {
  if (name == "random" || name == "constant") {
    *out = name == "constant" ? DtInit::Constant : DtInit::Random;
    return true;
  }
  return false;
}

void MambaConfig::finalize() {
  check_min("vocab_size", vocab_size, 1);
  check_min("d_model", d_model, 1);
  check_min("n_layer", n_layer, 1);
  check_min("d_state", d_state, 1);
  check_min("d_conv", d_conv, 1);
  check_min("expand", expand, 1);
  check_min("d_inner", d_inner, 0);
  check_min("dt_rank", dt_rank, 0);
  if (d_inner == 0) d_inner = expand * d_model;
  if (dt_rank == 0) dt_rank = ceil_div(d_model, 16);  // docs/DESIGN.md: dt_rank = ceil(d_model / 16)
  check_positive("dt_min", dt_min);
  check_positive("dt_max", dt_max);
  if (dt_min > dt_max) bad_field("dt_min", str(dt_min), str("must be <= dt_max = ", dt_max));
  if (!(dt_init_floor >= 0) || !std::isfinite(dt_init_floor)) {
    bad_field("dt_init_floor", str(dt_init_floor), "must be a finite number >= 0");
  }
  check_positive("dt_scale", dt_scale);
  check_positive("norm_eps", norm_eps);
  if (rc_equivariant) {
    if (static_cast<int64_t>(rc_complement.size()) != vocab_size)
      bad_field("rc_complement", str(rc_complement.size(), " entries"), str("needs one per token (", vocab_size, ")"));
    for (size_t v = 0; v < rc_complement.size(); ++v) {
      const int64_t c = rc_complement[v];
      if (c < 0 || c >= vocab_size || rc_complement[static_cast<size_t>(c)] != static_cast<int64_t>(v))
        bad_field("rc_complement", str("[", v, "] = ", c), "must map every token to a token whose complement it is");
    }
  }
  check_min("pad_vocab_size_multiple", pad_vocab_size_multiple, 1);
  if (!(initializer_range >= 0) || !std::isfinite(initializer_range)) {
    bad_field("initializer_range", str(initializer_range), "must be a finite number >= 0");
  }
  // Token ids: -1 means "none" (null in a HuggingFace config).
  const std::pair<const char*, int64_t> ids[] = {
      {"pad_token_id", pad_token_id}, {"bos_token_id", bos_token_id}, {"eos_token_id", eos_token_id}};
  for (const auto& id : ids) {
    if (id.second < -1 || id.second >= vocab_size) {
      bad_field(id.first, std::to_string(id.second), str("must be -1 (none) or in [0, vocab_size = ", vocab_size, ")"));
    }
  }
}

int64_t MambaConfig::num_parameters() const {
  const int64_t d = d_model, N = d_state, K = d_conv, V = vocab_size;
  const int64_t di = d_inner > 0 ? d_inner : expand * d_model;
  const int64_t r = dt_rank > 0 ? dt_rank : ceil_div(d_model, 16);
  const int64_t norm_params = norm == NormKind::LayerNorm ? 2 * d : d;  // weight (+ bias)
  int64_t layer = 0;
  layer += 2 * di * d + (proj_bias ? 2 * di : 0);  // in_proj
  // conv1d [di, 1, K], x_proj -> [dt | B | C], dt_proj weight + bias, A_log, D: once per direction with its own.
  const int64_t direction = di * K + (conv_bias ? di : 0) + (r + 2 * N) * di + di * r + di + di * N + di;
  layer += direction * (bidirectional && bidirectional_weights == BiWeights::Caduceus ? 2 : 1);
  layer += d * di + (proj_bias ? d : 0);                  // out_proj
  layer += norm_params;                                   // pre-norm
  int64_t total = V * d + n_layer * layer + norm_params;  // embedding, layers, norm_f
  if (!tie_embeddings) total += V * d;                    // separate lm_head
  return total;
}

int64_t MambaConfig::padded_vocab(int64_t raw) const {
  const int64_t m = pad_vocab_size_multiple > 0 ? pad_vocab_size_multiple : 1;
  return ceil_div(raw, m) * m;
}

MambaConfig MambaConfig::variant(const std::string& name) {
  // docs/DESIGN.md "Published variants" (d_inner = 2 * d_model, dt_rank = d_model / 16 for all of them).
  struct Row {
    const char* name;
    int64_t d_model, n_layer;
  };
  static const Row rows[] = {
      {"130m", 768, 24}, {"370m", 1024, 48}, {"790m", 1536, 48}, {"1.4b", 2048, 48}, {"2.8b", 2560, 64}};
  for (const Row& r : rows) {
    if (name == r.name) {
      MambaConfig c;
      c.vocab_size = 50280;
      c.d_model = r.d_model;
      c.n_layer = r.n_layer;
      c.finalize();
      return c;
    }
  }
  throw_error(ErrorKind::Usage, str("unknown model variant '", name, "' (valid: 130m, 370m, 790m, 1.4b, 2.8b)"));
}

// ---------------------------------------------------------------------------------------------------------------
// config.json parsing

namespace {

// Typed access to one JSON object, with errors naming `where` and the key path.
class Reader {
 public:
  Reader(const json& obj, std::string where, std::string prefix)
      : obj_(obj), where_(std::move(where)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }
  const json& at(const char* key) const { return obj_.at(key); }

  [[noreturn]] void fail(const char* key, const std::string& what) const {
    throw_error(ErrorKind::Checkpoint, str(where_, ": key '", prefix_, key, "' ", what));
  }
  [[noreturn]] void wrong_type(const char* key, const char* want) const {
    fail(key, str("must be ", want, ", found ", obj_.at(key).type_name(), " ", obj_.at(key).dump()));
  }

  // Integers; a float is accepted only when integral (2.0). Checked against lo.
  int64_t integer(const char* key, int64_t def, int64_t lo) const {
    if (!has(key)) return def;
    const json& v = obj_.at(key);
    int64_t out = 0;
    if (v.is_number_integer()) {
      out = v.get<int64_t>();
    } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
               v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e15) {
      out = static_cast<int64_t>(v.get<double>());
    } else {
      wrong_type(key, "an integer");
    }
    if (out < lo) fail(key, str("must be >= ", lo, ", found ", out));
    return out;
  }
  double number(const char* key, double def) const {
    if (!has(key)) return def;
    const json& v = obj_.at(key);
    if (!v.is_number()) wrong_type(key, "a number");
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!has(key)) return def;
    const json& v = obj_.at(key);
    if (!v.is_boolean()) wrong_type(key, "true or false");
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = obj_.at(key);
    if (!v.is_string()) wrong_type(key, "a string");
    return v.get<std::string>();
  }
  // "auto" (-> 0, meaning the default) or a positive integer.
  int64_t auto_or_int(const char* key) const {
    if (!has(key)) return 0;
    const json& v = obj_.at(key);
    if (v.is_string()) {
      if (v.get<std::string>() != "auto") fail(key, str("must be \"auto\" or an integer, found ", v.dump()));
      return 0;
    }
    if (!v.is_number()) wrong_type(key, "\"auto\" or an integer");
    return integer(key, 0, 1);
  }
  // Token id: an integer >= 0, or null (absent) -> -1.
  int64_t token_id(const char* key, int64_t def) const {
    if (obj_.contains(key) && obj_.at(key).is_null()) return -1;
    return integer(key, def, 0);
  }
  // A string from a fixed set.
  std::string choice(const char* key, const std::string& def, std::initializer_list<const char*> allowed) const {
    std::string v = string(key, def);
    std::string list;
    for (const char* a : allowed) {
      if (v == a) return v;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    fail(key, str("has unsupported value '", v, "' (expected one of: ", list, ")"));
  }

 private:
  const json& obj_;
  std::string where_;
  std::string prefix_;
};

// transformers.MambaConfig (defaults from its __init__: note num_hidden_layers 32, use_bias True,
// initializer_range 0.1, and that intermediate_size = int(expand * hidden_size) unless the file overrides it).
MambaConfig parse_transformers(const json& j, const std::string& where) {
  Reader r(j, where, "");
  MambaConfig c;
  c.vocab_size = r.integer("vocab_size", 50280, 1);
  c.d_model = r.integer("hidden_size", 768, 1);
  c.d_state = r.integer("state_size", 16, 1);
  c.n_layer = r.integer("num_hidden_layers", 32, 1);
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  c.expand = r.integer("expand", 2, 1);
  c.d_conv = r.integer("conv_kernel", 4, 1);
  c.proj_bias = r.boolean("use_bias", true);
  c.conv_bias = r.boolean("use_conv_bias", true);
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  c.dt_rank = r.auto_or_int("time_step_rank");
  c.dt_scale = r.number("time_step_scale", 1.0);
  c.dt_min = r.number("time_step_min", 1e-3);
  c.dt_max = r.number("time_step_max", 0.1);
  parse_dt_init(r.choice("time_step_init_scheme", "random", {"random", "constant"}), &c.dt_init);
  c.dt_init_floor = r.number("time_step_floor", 1e-4);
  c.d_inner = r.integer("intermediate_size", c.expand * c.d_model, 1);
  c.tie_embeddings = r.boolean("tie_word_embeddings", true);
  c.initializer_range = r.number("initializer_range", 0.1);
  c.pad_token_id = r.token_id("pad_token_id", 0);
  c.bos_token_id = r.token_id("bos_token_id", 0);
  c.eos_token_id = r.token_id("eos_token_id", 0);
  c.pad_vocab_size_multiple = r.integer("pad_vocab_size_multiple", c.pad_vocab_size_multiple, 1);  // not applied
  r.choice("hidden_act", "silu", {"silu"});
  // Our extensions (written by config_to_hf_json only when not the default).
  parse_norm_kind(r.choice("mamba_train_norm", "rmsnorm", {"rmsnorm", "layernorm"}), &c.norm);
  c.bidirectional = r.boolean("mamba_train_bidirectional", false);
  // Files written before the Caduceus variant existed have no such key: their reverse direction shares every weight.
  parse_bi_weights(r.choice("mamba_train_bidirectional_weights", "shared", {"caduceus", "shared"}),
                   &c.bidirectional_weights);
  c.rc_equivariant = r.boolean("mamba_train_rc_equivariant", false);
  if (c.rc_equivariant) {
    if (!r.has("mamba_train_rc_complement") || !r.at("mamba_train_rc_complement").is_array())
      r.wrong_type("mamba_train_rc_complement", "a list of token ids");
    for (const json& v : r.at("mamba_train_rc_complement")) {
      if (!v.is_number_integer()) r.wrong_type("mamba_train_rc_complement", "a list of token ids");
      c.rc_complement.push_back(v.get<int64_t>());
    }
  }
  return c;
}

// state-spaces/mamba MambaConfig (mamba_ssm/models/config_mamba.py) with the Mamba-1 mixer's defaults in ssm_cfg.
MambaConfig parse_state_spaces(const json& j, const std::string& where) {
  Reader r(j, where, "");
  MambaConfig c;
  c.d_model = r.integer("d_model", 2560, 1);
  c.n_layer = r.integer("n_layer", 64, 1);
  const int64_t raw_vocab = r.integer("vocab_size", 50277, 1);
  c.pad_vocab_size_multiple = r.integer("pad_vocab_size_multiple", 8, 1);
  c.vocab_size = c.padded_vocab(raw_vocab);  // MambaLMHeadModel pads the vocabulary in its constructor
  c.norm = r.boolean("rms_norm", true) ? NormKind::RMSNorm : NormKind::LayerNorm;
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  c.tie_embeddings = r.boolean("tie_embeddings", true);
  if (r.integer("d_intermediate", 0, 0) != 0) r.fail("d_intermediate", "is non-zero: MLP layers are not supported");
  if (r.has("attn_layer_idx")) {
    const json& a = r.at("attn_layer_idx");
    if (!a.is_array()) r.wrong_type("attn_layer_idx", "a list");
    if (!a.empty()) r.fail("attn_layer_idx", "is not empty: attention layers are not supported");
  }
  json empty = json::object();
  const json* ssm = &empty;
  if (r.has("ssm_cfg")) {
    if (!r.at("ssm_cfg").is_object()) r.wrong_type("ssm_cfg", "an object");
    ssm = &r.at("ssm_cfg");
  }
  Reader s(*ssm, where, "ssm_cfg.");
  s.choice("layer", "Mamba1", {"Mamba1"});
  c.d_state = s.integer("d_state", 16, 1);
  c.d_conv = s.integer("d_conv", 4, 1);
  c.expand = s.integer("expand", 2, 1);
  c.dt_rank = s.auto_or_int("dt_rank");
  c.dt_min = s.number("dt_min", 1e-3);
  c.dt_max = s.number("dt_max", 0.1);
  parse_dt_init(s.choice("dt_init", "random", {"random", "constant"}), &c.dt_init);
  c.dt_scale = s.number("dt_scale", 1.0);
  c.dt_init_floor = s.number("dt_init_floor", 1e-4);
  c.conv_bias = s.boolean("conv_bias", true);
  c.proj_bias = s.boolean("bias", false);
  c.d_inner = c.expand * c.d_model;
  c.bidirectional = r.boolean("mamba_train_bidirectional", false);
  parse_bi_weights(r.choice("mamba_train_bidirectional_weights", "shared", {"caduceus", "shared"}),
                   &c.bidirectional_weights);
  return c;
}

// The config.json key that holds one of our fields, in either dialect ("" when there is none).
std::string json_key_for(const std::string& field, bool transformers) {
  static const std::pair<const char*, const char*> hf[] = {{"vocab_size", "vocab_size"},
                                                           {"d_model", "hidden_size"},
                                                           {"n_layer", "num_hidden_layers"},
                                                           {"d_state", "state_size"},
                                                           {"d_conv", "conv_kernel"},
                                                           {"expand", "expand"},
                                                           {"d_inner", "intermediate_size"},
                                                           {"dt_rank", "time_step_rank"},
                                                           {"dt_min", "time_step_min"},
                                                           {"dt_max", "time_step_max"},
                                                           {"dt_init_floor", "time_step_floor"},
                                                           {"dt_scale", "time_step_scale"},
                                                           {"dt_init", "time_step_init_scheme"},
                                                           {"norm_eps", "layer_norm_epsilon"},
                                                           {"norm", "mamba_train_norm"},
                                                           {"pad_vocab_size_multiple", "pad_vocab_size_multiple"},
                                                           {"initializer_range", "initializer_range"},
                                                           {"pad_token_id", "pad_token_id"},
                                                           {"bos_token_id", "bos_token_id"},
                                                           {"eos_token_id", "eos_token_id"}};
  static const std::pair<const char*, const char*> ss[] = {{"vocab_size", "vocab_size"},
                                                           {"d_model", "d_model"},
                                                           {"n_layer", "n_layer"},
                                                           {"d_state", "ssm_cfg.d_state"},
                                                           {"d_conv", "ssm_cfg.d_conv"},
                                                           {"expand", "ssm_cfg.expand"},
                                                           {"dt_rank", "ssm_cfg.dt_rank"},
                                                           {"dt_min", "ssm_cfg.dt_min"},
                                                           {"dt_max", "ssm_cfg.dt_max"},
                                                           {"dt_init_floor", "ssm_cfg.dt_init_floor"},
                                                           {"dt_scale", "ssm_cfg.dt_scale"},
                                                           {"dt_init", "ssm_cfg.dt_init"},
                                                           {"pad_vocab_size_multiple", "pad_vocab_size_multiple"}};
  if (transformers) {
    for (const auto& e : hf)
      if (field == e.first) return e.second;
  } else {
    for (const auto& e : ss)
      if (field == e.first) return e.second;
  }
  return "";
}

}  // namespace

MambaConfig config_from_hf_json(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& ex) {
    throw_error(ErrorKind::Checkpoint, str(where, ": not valid JSON: ", ex.what()));
  }
  if (!j.is_object()) throw_error(ErrorKind::Checkpoint, str(where, ": expected a JSON object, found ", j.type_name()));
  Reader r(j, where, "");
  const bool has_model_type = r.has("model_type");
  if (has_model_type) r.choice("model_type", "mamba", {"mamba"});
  MambaConfig c;
  const bool transformers = has_model_type || r.has("hidden_size");
  if (transformers) {
    c = parse_transformers(j, where);
  } else if (r.has("d_model") || r.has("n_layer") || r.has("ssm_cfg")) {
    c = parse_state_spaces(j, where);
  } else {
    throw_error(ErrorKind::Checkpoint,
                str(where, ": not a Mamba config: found neither 'hidden_size'/'model_type' (transformers) nor ",
                    "'d_model'/'n_layer'/'ssm_cfg' (state-spaces)"));
  }
  try {
    c.finalize();
  } catch (const Error& e) {
    // finalize names our field ("invalid model config: dt_min = ..."); name the file's key too.
    const std::string msg = e.what(), lead = "invalid model config: ";
    std::string key;
    if (msg.compare(0, lead.size(), lead) == 0) {
      const std::string field = msg.substr(lead.size(), msg.find(' ', lead.size()) - lead.size());
      key = json_key_for(field, transformers);
    }
    throw_error(ErrorKind::Checkpoint, str(where, ": ", msg, key.empty() ? "" : str(" [key '", key, "']")));
  }
  return c;
}

std::string config_to_hf_json(const MambaConfig& cfg_in) {
  MambaConfig c = cfg_in;
  if (c.d_inner == 0) c.d_inner = c.expand * c.d_model;
  if (c.dt_rank == 0) c.dt_rank = ceil_div(c.d_model, 16);
  auto id = [](int64_t v) { return v < 0 ? json(nullptr) : json(v); };
  json j = json::object();
  j["model_type"] = "mamba";
  j["architectures"] = json::array({"MambaForCausalLM"});
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["state_size"] = c.d_state;
  j["num_hidden_layers"] = c.n_layer;
  j["layer_norm_epsilon"] = c.norm_eps;
  j["expand"] = c.expand;
  j["conv_kernel"] = c.d_conv;
  j["intermediate_size"] = c.d_inner;
  j["use_bias"] = c.proj_bias;
  j["use_conv_bias"] = c.conv_bias;
  j["hidden_act"] = "silu";
  j["initializer_range"] = c.initializer_range;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["time_step_rank"] = c.dt_rank;
  j["time_step_scale"] = c.dt_scale;
  j["time_step_min"] = c.dt_min;
  j["time_step_max"] = c.dt_max;
  j["time_step_init_scheme"] = dt_init_name(c.dt_init);
  j["time_step_floor"] = c.dt_init_floor;
  j["rescale_prenorm_residual"] =
      true;  // our init divides out_proj by sqrt(n_layer) (nn/init.cpp), as HF does with this flag
  j["use_cache"] = true;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["pad_vocab_size_multiple"] = c.pad_vocab_size_multiple;  // also present in the published *-hf configs
  j["pad_token_id"] = id(c.pad_token_id);
  j["bos_token_id"] = id(c.bos_token_id);
  j["eos_token_id"] = id(c.eos_token_id);
  if (c.norm != NormKind::RMSNorm) j["mamba_train_norm"] = norm_kind_name(c.norm);
  if (c.bidirectional) {
    j["mamba_train_bidirectional"] = true;
    j["mamba_train_bidirectional_weights"] = bi_weights_name(c.bidirectional_weights);
  }
  if (c.rc_equivariant) {
    j["mamba_train_rc_equivariant"] = true;
    j["mamba_train_rc_complement"] = c.rc_complement;
  }
  return j.dump(2) + "\n";
}

MambaConfig load_hf_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ErrorKind::Checkpoint, str("cannot open model config '", path, "': ", std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw_error(ErrorKind::Checkpoint, str("cannot read model config '", path, "': ", std::strerror(errno)));
  return config_from_hf_json(ss.str(), path);
}

}  // namespace mt
