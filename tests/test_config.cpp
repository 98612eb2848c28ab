// MambaConfig: parameter counts of the published variants (docs/DESIGN.md), defaults / validation, and config.json in
// both dialects (transformers and state-spaces), including errors that name the offending key.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/config.h"
#include "tests/test_util.h"

namespace mt {
namespace {

void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    }
    return;
  }
  ADD_FAILURE() << "no mt::Error thrown";
}

// Every field, so that a round trip that drops one is caught.
void expect_same(const MambaConfig& a, const MambaConfig& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.d_model, b.d_model);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.d_state, b.d_state);
  EXPECT_EQ(a.d_conv, b.d_conv);
  EXPECT_EQ(a.expand, b.expand);
  EXPECT_EQ(a.d_inner, b.d_inner);
  EXPECT_EQ(a.dt_rank, b.dt_rank);
  EXPECT_EQ(a.dt_min, b.dt_min);
  EXPECT_EQ(a.dt_max, b.dt_max);
  EXPECT_EQ(a.dt_init_floor, b.dt_init_floor);
  EXPECT_EQ(a.dt_scale, b.dt_scale);
  EXPECT_EQ(a.dt_init, b.dt_init);
  EXPECT_EQ(a.conv_bias, b.conv_bias);
  EXPECT_EQ(a.proj_bias, b.proj_bias);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.norm, b.norm);
  EXPECT_EQ(a.residual_in_fp32, b.residual_in_fp32);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.bidirectional, b.bidirectional);
  EXPECT_EQ(a.pad_vocab_size_multiple, b.pad_vocab_size_multiple);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
}

TEST(Config, VariantParameterCounts) {
  // docs/DESIGN.md "Published variants".
  struct Row {
    const char* name;
    int64_t d_model, n_layer, d_inner, dt_rank, params;
  };
  const Row rows[] = {{"130m", 768, 24, 1536, 48, 129135360LL},
                      {"370m", 1024, 48, 2048, 64, 371516416LL},
                      {"790m", 1536, 48, 3072, 96, 793204224LL},
                      {"1.4b", 2048, 48, 4096, 128, 1372178432LL},
                      {"2.8b", 2560, 64, 5120, 160, 2768345600LL}};
  for (const Row& r : rows) {
    MambaConfig c = MambaConfig::variant(r.name);
    EXPECT_EQ(c.d_model, r.d_model) << r.name;
    EXPECT_EQ(c.n_layer, r.n_layer) << r.name;
    EXPECT_EQ(c.d_inner, r.d_inner) << r.name;
    EXPECT_EQ(c.dt_rank, r.dt_rank) << r.name;
    EXPECT_EQ(c.vocab_size, 50280) << r.name;
    EXPECT_EQ(c.num_parameters(), r.params) << r.name;
  }
  // The defaults are the 130m model.
  MambaConfig def;
  EXPECT_EQ(def.num_parameters(), 129135360LL);
}

TEST(Config, UnknownVariantListsValidNames) {
  expect_error([] { MambaConfig::variant("7b"); }, ErrorKind::Usage, {"'7b'", "130m", "370m", "790m", "1.4b", "2.8b"});
}

TEST(Config, ParameterCountWithBiasesLayerNormUntied) {
  MambaConfig c;
  c.vocab_size = 11;
  c.d_model = 6;
  c.n_layer = 2;
  c.d_state = 3;
  c.d_conv = 2;
  c.expand = 2;
  c.proj_bias = true;
  c.conv_bias = false;
  c.norm = NormKind::LayerNorm;
  c.tie_embeddings = false;
  c.finalize();
  ASSERT_EQ(c.d_inner, 12);
  ASSERT_EQ(c.dt_rank, 1);  // ceil(6 / 16)
  const int64_t layer = (2 * 12 * 6 + 24) + (12 * 2) + (1 + 6) * 12 + (12 * 1 + 12) + (12 * 3 + 12) + (6 * 12 + 6) + 12;
  EXPECT_EQ(c.num_parameters(), 11 * 6 + 2 * layer + 12 + 11 * 6);
}

TEST(Config, FinalizeFillsDefaults) {
  MambaConfig c;
  c.d_model = 24;
  c.d_inner = 0;
  c.dt_rank = 0;
  c.finalize();
  EXPECT_EQ(c.d_inner, 48);
  EXPECT_EQ(c.dt_rank, 2);
  c.d_model = 33;
  c.expand = 3;
  c.d_inner = 0;
  c.dt_rank = 0;
  c.finalize();
  EXPECT_EQ(c.d_inner, 99);
  EXPECT_EQ(c.dt_rank, 3);
  EXPECT_EQ(c.padded_vocab(50277), 50280);
  EXPECT_EQ(c.padded_vocab(50280), 50280);
}

TEST(Config, FinalizeRejectsBadValues) {
  auto bad = [](const std::function<void(MambaConfig&)>& edit, const std::vector<std::string>& needles) {
    MambaConfig c;
    edit(c);
    expect_error([&] { c.finalize(); }, ErrorKind::Config, needles);
  };
  bad([](MambaConfig& c) { c.d_state = 0; }, {"d_state", "= 0", ">= 1"});
  bad([](MambaConfig& c) { c.vocab_size = -5; }, {"vocab_size", "-5"});
  bad([](MambaConfig& c) { c.n_layer = 0; }, {"n_layer"});
  bad([](MambaConfig& c) { c.dt_min = 0.5; }, {"dt_min", "0.5", "dt_max"});
  bad([](MambaConfig& c) { c.dt_max = -1; }, {"dt_max", "-1"});
  bad([](MambaConfig& c) { c.norm_eps = std::nan(""); }, {"norm_eps", "nan"});
  bad([](MambaConfig& c) { c.eos_token_id = 50280; }, {"eos_token_id", "50280"});
  bad([](MambaConfig& c) { c.pad_vocab_size_multiple = 0; }, {"pad_vocab_size_multiple"});
}

TEST(Config, HfJsonRoundTripNonDefaults) {
  MambaConfig c;
  c.vocab_size = 37;
  c.d_model = 24;
  c.n_layer = 3;
  c.d_state = 5;
  c.d_conv = 3;
  c.expand = 3;
  c.d_inner = 50;  // explicit intermediate_size, not expand * d_model
  c.dt_rank = 4;
  c.dt_min = 0.002;
  c.dt_max = 0.05;
  c.dt_init_floor = 3e-4;
  c.dt_scale = 0.7;
  c.dt_init = DtInit::Constant;
  c.conv_bias = false;
  c.proj_bias = true;
  c.norm_eps = 1e-6;
  c.norm = NormKind::LayerNorm;
  c.residual_in_fp32 = false;
  c.tie_embeddings = false;
  c.bidirectional = true;
  c.pad_vocab_size_multiple = 4;
  c.initializer_range = 0.031;
  c.pad_token_id = 1;
  c.bos_token_id = -1;
  c.eos_token_id = 36;
  c.finalize();
  const std::string text = config_to_hf_json(c);
  EXPECT_NE(text.find("\"model_type\": \"mamba\""), std::string::npos) << text;
  EXPECT_NE(text.find("MambaForCausalLM"), std::string::npos);
  EXPECT_NE(text.find("\"mamba_train_norm\": \"layernorm\""), std::string::npos);
  EXPECT_NE(text.find("\"mamba_train_bidirectional\": true"), std::string::npos);
  EXPECT_NE(text.find("\"bos_token_id\": null"), std::string::npos);
  expect_same(config_from_hf_json(text, "roundtrip"), c);

  // Defaults: our extension keys are absent.
  MambaConfig d = MambaConfig::variant("130m");
  const std::string dtext = config_to_hf_json(d);
  EXPECT_EQ(dtext.find("mamba_train_"), std::string::npos) << dtext;
  expect_same(config_from_hf_json(dtext, "roundtrip"), d);
}

// The config.json of state-spaces/mamba-130m-hf (transformers dialect, with some original keys carried along).
TEST(Config, ParsesPublishedTransformersConfig) {
  const char* text = R"({
    "architectures": ["MambaForCausalLM"], "bos_token_id": 0, "conv_kernel": 4, "eos_token_id": 0, "expand": 2,
    "fused_add_norm": true, "hidden_act": "silu", "hidden_size": 768, "initializer_range": 0.1,
    "intermediate_size": 1536, "layer_norm_epsilon": 1e-05, "model_type": "mamba", "n_layer": 24,
    "num_hidden_layers": 24, "pad_token_id": 0, "pad_vocab_size_multiple": 8, "rescale_prenorm_residual": false,
    "residual_in_fp32": true, "rms_norm": true, "state_size": 16, "time_step_floor": 0.0001,
    "time_step_init_scheme": "random", "time_step_max": 0.1, "time_step_min": 0.001, "time_step_rank": 48,
    "time_step_scale": 1.0, "torch_dtype": "float32", "transformers_version": "4.39.0.dev0", "use_bias": false,
    "use_cache": true, "use_conv_bias": true, "vocab_size": 50280})";
  MambaConfig c = config_from_hf_json(text, "mamba-130m-hf/config.json");
  MambaConfig want = MambaConfig::variant("130m");
  want.initializer_range = 0.1;
  expect_same(c, want);
  EXPECT_EQ(c.num_parameters(), 129135360LL);
}

// Keys missing from a transformers config take transformers' defaults (not ours); vocab is never padded there.
TEST(Config, TransformersDefaults) {
  MambaConfig c = config_from_hf_json(R"({"model_type": "mamba", "vocab_size": 37, "hidden_size": 40,
                                          "time_step_rank": "auto", "some_new_hf_key": [1, 2]})",
                                      "x");
  EXPECT_EQ(c.vocab_size, 37);
  EXPECT_EQ(c.n_layer, 32);
  EXPECT_TRUE(c.proj_bias);
  EXPECT_EQ(c.initializer_range, 0.1);
  EXPECT_EQ(c.d_inner, 80);
  EXPECT_EQ(c.dt_rank, 3);
  EXPECT_EQ(c.norm, NormKind::RMSNorm);
}

TEST(Config, ParsesStateSpacesConfig) {
  // state-spaces/mamba-130m's config.json: vocab 50277 padded to 50280.
  MambaConfig c = config_from_hf_json(R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
      "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8})",
                                      "ss");
  expect_same(c, MambaConfig::variant("130m"));
  EXPECT_EQ(c.num_parameters(), 129135360LL);

  MambaConfig d = config_from_hf_json(R"({"d_model": 32, "n_layer": 2, "vocab_size": 12, "rms_norm": false,
      "pad_vocab_size_multiple": 16, "tie_embeddings": false, "residual_in_fp32": false,
      "ssm_cfg": {"layer": "Mamba1", "d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 5, "dt_min": 0.01,
                  "dt_max": 0.2, "dt_init": "constant", "dt_scale": 2.0, "dt_init_floor": 0.001,
                  "conv_bias": false, "bias": true, "use_fast_path": false}})",
                                      "ss2");
  EXPECT_EQ(d.vocab_size, 16);
  EXPECT_EQ(d.d_model, 32);
  EXPECT_EQ(d.n_layer, 2);
  EXPECT_EQ(d.norm, NormKind::LayerNorm);
  EXPECT_FALSE(d.tie_embeddings);
  EXPECT_FALSE(d.residual_in_fp32);
  EXPECT_EQ(d.d_state, 8);
  EXPECT_EQ(d.d_conv, 3);
  EXPECT_EQ(d.expand, 3);
  EXPECT_EQ(d.d_inner, 96);
  EXPECT_EQ(d.dt_rank, 5);
  EXPECT_EQ(d.dt_min, 0.01);
  EXPECT_EQ(d.dt_max, 0.2);
  EXPECT_EQ(d.dt_init, DtInit::Constant);
  EXPECT_EQ(d.dt_scale, 2.0);
  EXPECT_EQ(d.dt_init_floor, 0.001);
  EXPECT_FALSE(d.conv_bias);
  EXPECT_TRUE(d.proj_bias);

  // Missing keys take state-spaces' defaults (the 2.8b model, vocab 50277 -> 50280).
  MambaConfig e = config_from_hf_json(R"({"ssm_cfg": {}})", "ss3");
  expect_same(e, MambaConfig::variant("2.8b"));
}

TEST(Config, JsonErrorsNameTheKey) {
  auto bad = [](const std::string& text, const std::vector<std::string>& needles) {
    expect_error([&] { config_from_hf_json(text, "dir/config.json"); }, ErrorKind::Checkpoint, needles);
  };
  std::vector<std::string> w = {"dir/config.json"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), w.begin(), w.end());
    return extra;
  };
  bad(R"({"hidden_size": "768"})", with({"'hidden_size'", "integer", "string"}));
  bad(R"({"hidden_size": 768.5})", with({"'hidden_size'", "integer"}));
  bad(R"({"hidden_size": 64, "use_bias": 1})", with({"'use_bias'", "true or false"}));
  bad(R"({"hidden_size": 64, "time_step_rank": "big"})", with({"'time_step_rank'", "auto"}));
  bad(R"({"hidden_size": 64, "time_step_min": "small"})", with({"'time_step_min'", "number"}));
  bad(R"({"hidden_size": 64, "state_size": 0})", with({"'state_size'", ">= 1"}));
  bad(R"({"hidden_size": 64, "hidden_act": "gelu"})", with({"'hidden_act'", "gelu", "silu"}));
  bad(R"({"hidden_size": 64, "time_step_init_scheme": "uniform"})", with({"'time_step_init_scheme'", "uniform"}));
  bad(R"({"model_type": "mamba2", "hidden_size": 64})", with({"'model_type'", "mamba2"}));
  bad(R"({"hidden_size": 64, "time_step_min": 0.5, "time_step_max": 0.1})", with({"dt_min", "0.5", "'time_step_min'"}));
  bad(R"({"d_model": 64, "ssm_cfg": {"dt_scale": -2}})", with({"dt_scale", "-2", "'ssm_cfg.dt_scale'"}));
  bad(R"({"hidden_size": 64, "vocab_size": 10, "eos_token_id": 10})", with({"'eos_token_id'", "vocab_size = 10"}));
  bad(R"({"hidden_size": 64, "eos_token_id": [0, 1]})", with({"'eos_token_id'", "integer"}));
  bad(R"({"d_model": 64, "ssm_cfg": {"d_state": -1}})", with({"'ssm_cfg.d_state'", ">= 1"}));
  bad(R"({"d_model": 64, "ssm_cfg": {"layer": "Mamba2"}})", with({"'ssm_cfg.layer'", "Mamba2"}));
  bad(R"({"d_model": 64, "ssm_cfg": [1]})", with({"'ssm_cfg'", "object"}));
  bad(R"({"d_model": 64, "rms_norm": "yes"})", with({"'rms_norm'", "true or false"}));
  bad(R"({"d_model": 64, "d_intermediate": 128})", with({"'d_intermediate'", "MLP"}));
  bad(R"({"d_model": 64, "attn_layer_idx": [1]})", with({"'attn_layer_idx'", "attention"}));
  bad(R"({"d_model": 64, "ssm_cfg": {"dt_rank": 2.5}})", with({"'ssm_cfg.dt_rank'"}));
  bad(R"({"hidden": 1})", with({"not a Mamba config"}));
  bad(R"([1, 2])", with({"JSON object"}));
  bad(R"({"hidden_size": )", with({"not valid JSON"}));
}

TEST(Config, LoadHfConfigFromDirectory) {
  char templ[] = "/tmp/mt_config_XXXXXX";
  ASSERT_NE(mkdtemp(templ), nullptr);
  const std::string dir = templ;
  expect_error([&] { load_hf_config(dir); }, ErrorKind::Checkpoint, {dir + "/config.json", "No such file"});
  MambaConfig c = MambaConfig::variant("370m");
  std::ofstream(dir + "/config.json") << config_to_hf_json(c);
  expect_same(load_hf_config(dir), c);
  std::ofstream(dir + "/config.json") << R"({"hidden_size": true})";
  expect_error([&] { load_hf_config(dir); }, ErrorKind::Checkpoint, {dir + "/config.json", "'hidden_size'"});
  std::filesystem::remove_all(dir);
}

// The config.json that transformers 5 wrote for the parity data (tools/gen_parity.py): every non-default value
// arrives, and the parameter count equals the number of values in model.safetensors (printed by the script).
TEST(Config, ParsesGeneratedParityConfig) {
  MambaConfig c = load_hf_config(test::source_path("tests/data/parity"));
  EXPECT_EQ(c.vocab_size, 37);
  EXPECT_EQ(c.d_model, 24);
  EXPECT_EQ(c.n_layer, 3);
  EXPECT_EQ(c.d_state, 5);
  EXPECT_EQ(c.d_conv, 3);
  EXPECT_EQ(c.expand, 2);
  EXPECT_EQ(c.d_inner, 48);
  EXPECT_EQ(c.dt_rank, 4);
  EXPECT_FALSE(c.proj_bias);
  EXPECT_TRUE(c.conv_bias);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_TRUE(c.residual_in_fp32);
  EXPECT_EQ(c.norm, NormKind::RMSNorm);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.dt_min, 0.002);
  EXPECT_EQ(c.dt_max, 0.08);
  EXPECT_EQ(c.initializer_range, 0.02);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.num_parameters(), 15528);
  expect_same(load_hf_config(test::source_path("tests/data/parity_f32")), c);
}

}  // namespace
}  // namespace mt
