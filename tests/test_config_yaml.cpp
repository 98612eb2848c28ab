// The strict YAML training config (train/config/config.h): example configs, defaults, round trip, and every refusal
// with its message and line:column (docs/DESIGN.md F6: what yaml-cpp 0.7.0 would accept silently).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "test_util.h"
#include "train/config/config.h"
#include "train/config/schema.h"

namespace mt::train {
namespace {

using test::source_path;

// Selective copying needs no file: the smallest valid config.
const std::string kCopy = "data:\n  kind: selective_copying\n";

std::string load_error(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    load_train_config(yaml, "cfg.yaml", sets);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config) << e.what();
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    return msg;
  }
  return "(no error)";
}

#define EXPECT_REFUSED(yaml, fragment)                                              \
  do {                                                                              \
    const std::string mt_msg_ = load_error(yaml);                                   \
    EXPECT_NE(mt_msg_.find(fragment), std::string::npos) << "message: " << mt_msg_; \
  } while (0)

#define EXPECT_SET_REFUSED(yaml, sets, fragment)                                    \
  do {                                                                              \
    const std::string mt_msg_ = load_error(yaml, sets);                             \
    EXPECT_NE(mt_msg_.find(fragment), std::string::npos) << "message: " << mt_msg_; \
  } while (0)

// Every schema key (as YAML text) and the MambaConfig fields outside the schema.
void expect_same(const TrainConfig& a, const TrainConfig& b) {
  for (const schema::Key& k : schema::keys()) {
    EXPECT_EQ(schema::format_yaml(k, k.get(a)), schema::format_yaml(k, k.get(b))) << k.path;
  }
  EXPECT_EQ(a.model.mamba.pad_vocab_size_multiple, b.model.mamba.pad_vocab_size_multiple);
  EXPECT_EQ(a.model.mamba.pad_token_id, b.model.mamba.pad_token_id);
  EXPECT_EQ(a.model.mamba.bos_token_id, b.model.mamba.bos_token_id);
  EXPECT_EQ(a.model.mamba.eos_token_id, b.model.mamba.eos_token_id);
}

struct CwdGuard {
  std::filesystem::path old = std::filesystem::current_path();
  explicit CwdGuard(const std::string& dir) { std::filesystem::current_path(dir); }
  ~CwdGuard() { std::filesystem::current_path(old); }
};

double seconds_to_load(const std::string& yaml) {
  const auto t0 = std::chrono::steady_clock::now();
  load_error(yaml);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(ConfigYaml, ExampleConfigsLoad) {
  CwdGuard cwd(MT_SOURCE_DIR);  // data.path is relative to the repository root
  const TrainConfig ts = load_train_config_file("configs/tinyshakespeare.yaml");
  EXPECT_EQ(ts.run.name, "tinyshakespeare");
  EXPECT_EQ(ts.data.kind, "text");
  EXPECT_EQ(ts.data.path, "data/corpora/tinyshakespeare.txt");
  EXPECT_EQ(ts.tokenizer.kind, "byte");
  EXPECT_EQ(ts.model.head, "lm");
  EXPECT_EQ(ts.model.mamba.d_model, 64);
  EXPECT_EQ(ts.model.mamba.n_layer, 2);
  EXPECT_EQ(ts.model.mamba.vocab_size, 256);  // 0 = the byte tokenizer's
  EXPECT_EQ(ts.model.mamba.d_inner, 128);
  EXPECT_EQ(ts.model.mamba.dt_rank, 4);
  EXPECT_EQ(ts.run.out_dir, "runs/tinyshakespeare");
  EXPECT_EQ(ts.checkpoint.dir, "runs/tinyshakespeare/checkpoints");
  EXPECT_EQ(ts.logging.metrics_file, "runs/tinyshakespeare/metrics.jsonl");

  const TrainConfig sc = load_train_config_file("configs/selective_copying.yaml");
  EXPECT_EQ(sc.data.kind, "selective_copying");
  EXPECT_EQ(sc.model.mamba.vocab_size, sc.data.copy_vocab + 2);
  EXPECT_GT(sc.data.seq_len, 2 * sc.data.copy_tokens);
  EXPECT_EQ(sc.trainer.global_batch_size % sc.trainer.micro_batch_size, 0);
}

TEST(ConfigYaml, MissingKeysTakeDefaults) {
  const TrainConfig c = load_train_config(kCopy, "cfg.yaml");
  TrainConfig want = schema::defaults();
  want.data.kind = "selective_copying";
  want.model.mamba.vocab_size = want.data.copy_vocab + 2;
  want.model.mamba.finalize();  // d_inner = 2 * 768, dt_rank = 48
  want.run.out_dir = "runs/run";
  want.checkpoint.dir = "runs/run/checkpoints";
  want.logging.metrics_file = "runs/run/metrics.jsonl";
  expect_same(c, want);
  EXPECT_EQ(c.model.mamba.d_inner, 1536);
  EXPECT_EQ(c.model.mamba.dt_rank, 48);
  EXPECT_EQ(c.optimizer.lr, 1e-3);
  EXPECT_EQ(c.trainer.precision, "fp32");
  // Empty sections and keys whose default is "" may be written without a value.
  const TrainConfig e = load_train_config(kCopy + "optimizer:\nrun:\n  out_dir: ~\ncheckpoint:\n  dir:\n", "cfg.yaml");
  EXPECT_EQ(e.run.out_dir, "runs/run");
  EXPECT_EQ(e.checkpoint.dir, "runs/run/checkpoints");
  EXPECT_EQ(e.optimizer.lr, 1e-3);
}

TEST(ConfigYaml, VariantIsAStartingPoint) {
  const TrainConfig c = load_train_config(kCopy + "model:\n  variant: 370m\n  n_layer: 2\n", "cfg.yaml");
  EXPECT_EQ(c.model.mamba.d_model, 1024);
  EXPECT_EQ(c.model.mamba.n_layer, 2);
  EXPECT_EQ(c.model.mamba.d_inner, 2048);
  EXPECT_EQ(c.model.mamba.dt_rank, 64);
  EXPECT_EQ(c.model.mamba.vocab_size, 10);  // still the data's
  // --set model.variant does not undo explicit keys of the file.
  const TrainConfig d = load_train_config(kCopy + "model:\n  d_model: 64\n", "cfg.yaml", {"model.variant=130m"});
  EXPECT_EQ(d.model.mamba.d_model, 64);
  EXPECT_EQ(d.model.mamba.n_layer, 24);
  EXPECT_EQ(d.model.mamba.d_inner, 128);
}

TEST(ConfigYaml, DumpRoundTrips) {
  std::vector<TrainConfig> configs;
  {
    CwdGuard cwd(MT_SOURCE_DIR);
    configs.push_back(load_train_config_file("configs/tinyshakespeare.yaml"));
    configs.push_back(load_train_config_file("configs/selective_copying.yaml"));
  }
  configs.push_back(load_train_config(kCopy, "cfg.yaml"));
  // Non-defaults everywhere, awkward strings and floats.
  const std::string odd =
      "run:\n  name: \"my run: #1 \\\"q\\\" \\\\ \\t tab, caf\xc3\xa9\"\n  seed: 18446744073\n  device: cuda:1\n"
      "  deterministic: true\n"
      "model:\n  variant: 1.4b\n  d_model: 96\n  dt_min: 0.0001\n  dt_max: 0.30000000000000004\n  conv_bias: false\n"
      "  norm: layernorm\n  head: sequence_classification\n  num_classes: 5\n  pooling: state\n"
      "data:\n  kind: selective_copying\n  seq_len: 33\n  copy_tokens: 16\n  copy_vocab: 300\n"
      "optimizer:\n  lr: 3e-4\n  eps: 1e-12\n  weight_decay: 0\n"
      "scheduler:\n  kind: linear\n  warmup_steps: 7\n  min_lr: 1.5e-300\n"
      "trainer:\n  max_steps: 8\n  micro_batch_size: 3\n  global_batch_size: 9\n  precision: fp16\n"
      "  loss_scale_init: 1024.5\n"
      "checkpoint:\n  dir: /tmp/x y/ckpt\n  resume: never\n"
      "logging:\n  metrics_file: ''\n  progress: false\n";
  configs.push_back(load_train_config(odd, "odd.yaml"));
  EXPECT_EQ(configs.back().run.name, "my run: #1 \"q\" \\ \t tab, caf\xc3\xa9");
  EXPECT_EQ(configs.back().model.mamba.n_layer, 48);
  EXPECT_EQ(configs.back().model.mamba.vocab_size, 302);
  for (const TrainConfig& c : configs) {
    const std::string text = dump_train_config(c);
    TrainConfig back;
    {
      CwdGuard cwd(MT_SOURCE_DIR);
      back = load_train_config(text, "dump.yaml");
    }
    expect_same(back, c);
    EXPECT_EQ(dump_train_config(back), text);
  }
}

TEST(ConfigYaml, DumpHasEveryKeyInSectionOrder) {
  const std::string text = dump_train_config(load_train_config(kCopy, "cfg.yaml"));
  size_t pos = 0;
  for (const std::string& sec : schema::sections()) {
    const size_t at = text.find("\n" + sec + ":\n", pos);
    ASSERT_NE(at, std::string::npos) << sec;
    pos = at + 1;
    for (const schema::Key& k : schema::keys()) {
      if (k.section() == sec) {
        EXPECT_NE(text.find("\n  " + k.leaf() + ": ", pos), std::string::npos) << k.path;
      }
    }
  }
  EXPECT_NE(text.find("  out_dir: \"runs/run\"\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  kind: cosine\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  variant: \"\"\n"), std::string::npos) << text;
}

TEST(ConfigYaml, DuplicateKeysNameBothLines) {
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: 0.1\n  eps: 1e-8\n  lr: 0.2\n",
                 "cfg.yaml:6:3: optimizer.lr: duplicate key: already set at line 4");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 5\ndata:\n  seq_len: 9\n",
                 "cfg.yaml:5:1: data: duplicate key: already set at line 1");
  EXPECT_REFUSED(kCopy + "optimizer: {lr: 0.1, lr: 0.2}\n",
                 "cfg.yaml:3:22: optimizer.lr: duplicate key: already set at line 3");
}

TEST(ConfigYaml, SecondDocumentRefused) {
  EXPECT_REFUSED(kCopy + "---\ndata:\n  kind: text\n", "cfg.yaml:3:1: several YAML documents (---) are not allowed");
  EXPECT_REFUSED(kCopy + "---\n", "several YAML documents");
  // A leading "---" and a "..." end marker are one document.
  EXPECT_EQ(load_train_config("---\n" + kCopy + "...\n", "cfg.yaml").data.kind, "selective_copying");
}

TEST(ConfigYaml, AnchorsAliasesAndAliasBombRefusedFast) {
  // Billion laughs: 9 levels of 9 aliases = 387 million leaves for a naive walk.
  std::string bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    const char p = static_cast<char>(c - 1);
    bomb += str(c, ": &", c, " [*", p, ",*", p, ",*", p, ",*", p, ",*", p, ",*", p, ",*", p, ",*", p, ",*", p, "]\n");
  }
  EXPECT_REFUSED(bomb, "cfg.yaml:1:4: a: anchors and aliases are not allowed");
  EXPECT_LT(seconds_to_load(bomb), 0.5);
  EXPECT_REFUSED("data: &d\n  kind: selective_copying\ntrainer: *d\n",
                 "cfg.yaml:1:7: data: anchors and aliases are not allowed");
  EXPECT_REFUSED(kCopy + "run:\n  name: *x\n", "cfg.yaml:4:9: invalid YAML: the referenced anchor is not defined");
  EXPECT_REFUSED(kCopy + "optimizer:\n  <<: {lr: 0.1}\n", "cfg.yaml:4:3: optimizer: merge keys (<<) are not allowed");
  EXPECT_REFUSED(kCopy + "run:\n  name: !!str abc\n", "cfg.yaml:4:9: run.name: tags are not allowed (found '!!str')");
  EXPECT_REFUSED(kCopy + "run: !cfg\n  name: abc\n", "run: tags are not allowed (found '!cfg')");
  EXPECT_REFUSED(kCopy + "? [a, b]\n: 1\n", "cfg.yaml:3:3: mapping keys must be plain scalars");
  EXPECT_REFUSED(kCopy + "optimizer:\n  ? \n  : 1\n", "cfg.yaml:5:3: optimizer: mapping keys must be plain scalars");
}

TEST(ConfigYaml, CapsOnNodesAndDepth) {
  // 100 KB of garbage keys: short lines hit the node cap while parsing, long ones the first unknown section.
  std::string garbage, long_garbage;
  for (int i = 0; garbage.size() < 100000; ++i) garbage += str("k", i, ": ", i, "\n");
  for (int i = 0; long_garbage.size() < 100000; ++i) long_garbage += str("garbage_key_", i, ": value_", i, "\n");
  EXPECT_REFUSED(garbage, "config too large: more than 10000 YAML nodes");
  EXPECT_REFUSED(long_garbage, "cfg.yaml:1:1: garbage_key_0: unknown section");
  EXPECT_LT(seconds_to_load(garbage), 1.0);
  EXPECT_LT(seconds_to_load(long_garbage), 1.0);
  std::string nested = kCopy + "optimizer:\n";
  for (int i = 0; nested.size() < 100000; ++i) nested += str("  k", i, ": [1, 2, 3]\n");
  EXPECT_REFUSED(nested, "config too large");
  // A few garbage keys: the first unknown one is named.
  EXPECT_REFUSED(kCopy + "zzqx: 1\nyyqx: 2\n", "cfg.yaml:3:1: zzqx: unknown section (sections: run, model,");
  EXPECT_REFUSED(std::string(40, '[') + std::string(40, ']'), "config too deeply nested: more than 32 levels");
  EXPECT_REFUSED(kCopy + "run:\n  name: " + std::string(40, '[') + std::string(40, ']') + "\n",
                 "cfg.yaml:4:39: run.name[0][0]");
  // An unclosed run of brackets reads as nested complex keys in yaml-cpp: refused at once either way.
  EXPECT_REFUSED(std::string(100000, '['), "cfg.yaml:1:");
  EXPECT_LT(seconds_to_load(std::string(100000, '[')), 1.0);
  EXPECT_REFUSED(std::string(2 << 20, 'a'), "config too large: 2097152 bytes");
}

TEST(ConfigYaml, LoadAllTrapAndMalformedYaml) {
  // YAML::LoadAll(",") loops forever in yaml-cpp 0.7.0; the loader must answer. Run it on a thread so that a
  // regression fails this test instead of hanging the suite.
  for (const std::string& text : {std::string(","), std::string(",\na: 1\n"), std::string("[,]")}) {
    std::promise<std::string> done;
    std::future<std::string> result = done.get_future();
    std::thread([text, &done] { done.set_value(load_error(text)); }).detach();
    if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      std::fprintf(stderr, "load_train_config(\"%s\") hangs\n", text.c_str());
      std::abort();  // the thread cannot be stopped
    }
    const std::string msg = result.get();
    EXPECT_NE(msg.find("cfg.yaml:1:"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("no error"), std::string::npos) << msg;
  }
  EXPECT_REFUSED(",", "cfg.yaml:1:1: expected a mapping of sections at the top level");
  EXPECT_REFUSED(kCopy + "run:\n\tname: x\n", "cfg.yaml:4:");
  EXPECT_REFUSED(kCopy + "run:\n\tname: x\n", "invalid YAML: illegal map value (this line is indented with a tab");
  EXPECT_REFUSED(kCopy + "run:\n  name: x\n   seed: 1\n", "cfg.yaml:5:8: invalid YAML: illegal map value");
  EXPECT_REFUSED(kCopy + "optimizer: {lr: 0.1\n", "invalid YAML: end of map flow not found");
  EXPECT_REFUSED("", "cfg.yaml: the config is empty");
  EXPECT_REFUSED("# only a comment\n\n", "cfg.yaml: the config is empty");
  EXPECT_REFUSED(
      "- run\n- data\n",
      "cfg.yaml:1:1: expected a mapping of sections at the top level (run:, model:, data:, ...), got a sequence");
  EXPECT_REFUSED("hello\n", "got 'hello'");
}

TEST(ConfigYaml, ScalarRules) {
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: .nan\n", "cfg.yaml:4:7: optimizer.lr: must be a finite number, got '.nan'");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: -.inf\n", "must be a finite number, got '-.inf'");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: nan\n", "must be a finite number, got 'nan'");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: Infinity\n", "must be a finite number");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: 1e999\n", "must be a finite number, got '1e999'");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: 0x1p-3\n", "optimizer.lr: expected a number, got '0x1p-3'");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: \"0.1\"\n",
                 "expected a number, got the quoted string '0.1' (write numbers without quotes)");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: yes\n", "cfg.yaml:4:9: logging.plot: expected true or false, got 'yes'");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: yes\n", "yes / no / on / off");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: on\n", "got 'on'");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: True\n", "got 'True'");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: 'true'\n", "write true / false without quotes");
  EXPECT_REFUSED(kCopy + "logging:\n  plot: 1\n", "expected true or false, got '1'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 1.5\n",
                 "cfg.yaml:4:14: trainer.max_steps: expected an integer, got '1.5'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 0x10\n", "expected an integer, got '0x10'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 1e3\n", "expected an integer, got '1e3'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 010\n", "no leading zeros");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 1_000\n", "expected an integer, got '1_000'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 99999999999999999999\n", "out of the range of a 64-bit integer");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: \"8\"\n", "expected an integer, got the quoted string '8'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: abc\n", "expected an integer, got 'abc'");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: [1, 2]\n", "trainer.max_steps: expected an integer, got a sequence");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: {a: 1}\n", "expected an integer, got a mapping");
  EXPECT_REFUSED(
      kCopy + "trainer:\n  max_steps:\n",
      "cfg.yaml:4:3: trainer.max_steps: has no value (expected an integer; remove the key to use the default 100)");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: ~\n", "optimizer.lr: has no value");
  EXPECT_REFUSED(kCopy + "run:\n  name: null\n", "run.name: has no value");
  EXPECT_REFUSED(kCopy + "run:\n  name: ''\n", "run.name: must not be empty");
  EXPECT_REFUSED(kCopy + "trainer: 5\n", "cfg.yaml:3:10: trainer: expected a mapping of keys");
  EXPECT_REFUSED(kCopy + "scheduler:\n  kind: cosin\n",
                 "scheduler.kind: expected one of [cosine, constant, linear], got 'cosin'");
  EXPECT_REFUSED(kCopy + "run:\n  device: gpu\n", "run.device: expected auto, cpu, cuda or cuda:N");
  EXPECT_REFUSED(kCopy + "model:\n  variant: 7b\n",
                 "model.variant: expected one of [\"\", 130m, 370m, 790m, 1.4b, 2.8b], got '7b'");
  // Accepted spellings.
  const TrainConfig c = load_train_config(
      kCopy +
          "optimizer:\n  lr: +.5e-2\n  eps: 1.\n  weight_decay: 0\nrun:\n  name: 123\n  seed: +7\n  device: 'cuda:0'\n"
          "logging:\n  plot: false\n",
      "cfg.yaml");
  EXPECT_EQ(c.optimizer.lr, 0.005);
  EXPECT_EQ(c.optimizer.eps, 1.0);
  EXPECT_EQ(c.run.name, "123");
  EXPECT_EQ(c.run.seed, 7u);
  EXPECT_EQ(c.run.device, "cuda:0");
  EXPECT_FALSE(c.logging.plot);
}

TEST(ConfigYaml, UnknownKeysSuggestTheNearest) {
  EXPECT_REFUSED(kCopy + "optimizer:\n  lrr: 0.1\n",
                 "cfg.yaml:4:3: optimizer.lrr: unknown key; did you mean 'optimizer.lr'?");
  EXPECT_REFUSED(kCopy + "trainer:\n  max_step: 10\n", "did you mean 'trainer.max_steps'?");
  EXPECT_REFUSED(kCopy + "trainer:\n  lr: 0.1\n", "trainer.lr: unknown key; did you mean 'optimizer.lr'?");
  EXPECT_REFUSED(kCopy + "optimizer:\n  learning_rate: 0.1\n",
                 "optimizer.learning_rate: unknown key (keys of optimizer: name, lr, beta1,");
  EXPECT_REFUSED(kCopy + "optimiser:\n  lr: 0.1\n",
                 "cfg.yaml:3:1: optimiser: unknown section; did you mean 'optimizer'?");
  EXPECT_REFUSED(kCopy + "max_steps: 10\n", "max_steps: unknown section; did you mean 'trainer.max_steps'?");
  EXPECT_REFUSED(kCopy + "optimizer.lr: 0.1\n", "optimizer.lr: unknown section: write dotted keys nested");
  EXPECT_REFUSED(kCopy + "model:\n  dmodel: 64\n", "did you mean 'model.d_model'?");
}

TEST(ConfigYaml, RangesAndCrossKeyChecks) {
  const std::string text = "data:\n  path: " + source_path("data/corpora/tinyshakespeare.txt") + "\n";
  EXPECT_EQ(load_train_config(text, "cfg.yaml").model.mamba.vocab_size, 256);
  EXPECT_REFUSED(kCopy + "trainer:\n  max_steps: 0\n",
                 "cfg.yaml:4:3: trainer.max_steps: must be >= 1 (or give trainer.epochs), got 0");
  EXPECT_REFUSED(kCopy + "optimizer:\n  lr: 0\n", "optimizer.lr: must be > 0, got 0");
  EXPECT_REFUSED(kCopy + "optimizer:\n  beta2: 1.0\n", "optimizer.beta2: must be < 1, got 1.0");
  EXPECT_REFUSED(kCopy + "trainer:\n  eval_batches: 0\n", "trainer.eval_batches: must be >= 1, got 0");
  EXPECT_REFUSED(kCopy + "model:\n  d_model: 0\n", "model.d_model: must be >= 1, got 0");
  EXPECT_REFUSED(kCopy + "model:\n  n_layer: -2\n", "model.n_layer: must be >= 1, got -2");
  EXPECT_REFUSED(kCopy + "model:\n  expand: 9223372036854775807\n",
                 "model.expand: must be <= 65536, got 9223372036854775807");
  EXPECT_REFUSED(kCopy + "model:\n  d_model: 16777216\n  expand: 65536\n  n_layer: 65536\n",
                 "cfg.yaml:4:3: model.d_model: the model would have about");
  EXPECT_REFUSED("data:\n  kind: selective_copying\n  copy_vocab: 4611686018427387904\n",
                 "data.copy_vocab: must be <= 1073741824");
  EXPECT_REFUSED(kCopy + "data:\n  seq_len: 1\n", "data: duplicate key");
  EXPECT_REFUSED("data:\n  kind: selective_copying\n  seq_len: 1\n",
                 "cfg.yaml:3:12: data.seq_len: must be >= 2, got 1");
  EXPECT_REFUSED(kCopy + "trainer:\n  micro_batch_size: 8\n  global_batch_size: 12\n",
                 "cfg.yaml:5:3: trainer.global_batch_size: trainer.global_batch_size (12) must be a multiple of "
                 "trainer.micro_batch_size (8)");
  EXPECT_REFUSED(kCopy + "trainer:\n  micro_batch_size: 3\n",
                 "cfg.yaml:4:3: trainer.micro_batch_size: trainer.global_batch_size (8) must be a multiple");
  EXPECT_REFUSED(
      kCopy + "scheduler:\n  warmup_steps: 100\n",
      "cfg.yaml:4:3: scheduler.warmup_steps: scheduler.warmup_steps (100) must be < trainer.max_steps (100)");
  EXPECT_REFUSED(kCopy + "scheduler:\n  min_lr: 0.01\n",
                 "scheduler.min_lr: scheduler.min_lr (0.01) must be <= optimizer.lr (0.001)");
  EXPECT_REFUSED("trainer:\n  max_steps: 5\n", "cfg.yaml: data.path: data.path is required when data.kind is text");
  EXPECT_REFUSED("data:\n  kind: text\n", "cfg.yaml:2:3: data.kind: data.path is required");
  EXPECT_REFUSED("data:\n  path: no/such/corpus.txt\n",
                 "cfg.yaml:2:3: data.path: no such file 'no/such/corpus.txt' (relative to the working directory");
  EXPECT_REFUSED("data:\n  path: /tmp\n", "data.path: '/tmp' is not a regular file");
  EXPECT_REFUSED(
      kCopy + "model:\n  head: sequence_classification\n  num_classes: 1\n",
      "cfg.yaml:5:3: model.num_classes: model.head sequence_classification needs model.num_classes >= 2, got 1");
  EXPECT_REFUSED(kCopy + "distributed:\n  nproc_per_node: 0\n",
                 "cfg.yaml:4:19: distributed.nproc_per_node: must be >= 1, got 0");
  EXPECT_REFUSED(kCopy + "distributed:\n  backend: gloo\n",
                 "cfg.yaml:4:12: distributed.backend: expected one of [auto, nccl, tcp], got 'gloo'");
  EXPECT_REFUSED(kCopy + "distributed:\n  timeout_s: 0\n", "cfg.yaml:4:14: distributed.timeout_s: must be > 0, got 0");
  EXPECT_REFUSED(kCopy + "model:\n  dt_min: 0.2\n", "model.dt_min: must be <= model.dt_max = 0.1, got 0.2");
  EXPECT_REFUSED(kCopy + "model:\n  dt_max: 0.0001\n", "model.dt_max: must be >= model.dt_min = 0.001, got 0.0001");
  EXPECT_REFUSED("data:\n  kind: selective_copying\n  seq_len: 8\n  copy_tokens: 4\n",
                 "cfg.yaml:3:3: data.seq_len: must be > 2 * data.copy_tokens = 8");
  EXPECT_REFUSED(kCopy + "model:\n  vocab_size: 9\n",
                 "model.vocab_size: must be >= 10 (selective_copying uses ids 0..copy_vocab + 1 = 9)");
  EXPECT_REFUSED(text + "model:\n  vocab_size: 100\n",
                 "model.vocab_size: must be >= 256 (the byte tokenizer's vocabulary)");
  EXPECT_REFUSED(kCopy + "model:\n  init_from: /no/such/dir\n",
                 "model.init_from: no such file or directory '/no/such/dir'");
  EXPECT_REFUSED(
      kCopy + "model:\n  init_from: " + source_path("tests") + "\n",
      "is neither a HuggingFace directory (no config.json) nor a run or checkpoint directory with a valid checkpoint");
  // fp16 is allowed on the CPU (our CPU ops compute bf16 / f16 through f32).
  const TrainConfig c = load_train_config(kCopy + "run:\n  device: cpu\ntrainer:\n  precision: fp16\n", "cfg.yaml");
  EXPECT_EQ(c.trainer.precision, "fp16");
  EXPECT_EQ(load_train_config(kCopy + "model:\n  init_from: " + source_path("configs/mamba-130m") + "\n", "cfg.yaml")
                .model.init_from,
            source_path("configs/mamba-130m"));
}

TEST(ConfigYaml, SetOverrides) {
  const TrainConfig c = load_train_config(kCopy + "trainer:\n  max_steps: 5\n", "cfg.yaml",
                                          {"trainer.max_steps=7", "optimizer.lr=3e-4", "logging.plot=false",
                                           "run.name=abc", "data.copy_vocab=20", "run.out_dir="});
  EXPECT_EQ(c.trainer.max_steps, 7);
  EXPECT_EQ(c.optimizer.lr, 3e-4);
  EXPECT_FALSE(c.logging.plot);
  EXPECT_EQ(c.run.out_dir, "runs/abc");
  EXPECT_EQ(c.model.mamba.vocab_size, 22);
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"trainer.max_steps=abc"},
                     "--set trainer.max_steps: expected an integer, got 'abc'");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"optimizer.lr=.nan"},
                     "--set optimizer.lr: must be a finite number, got '.nan'");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"logging.plot=yes"},
                     "--set logging.plot: expected true or false, got 'yes'");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"trainer.max_steps="}, "--set trainer.max_steps: has no value");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"trainer.max_steps=0"},
                     "--set trainer.max_steps: must be >= 1 (or give trainer.epochs), got 0");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"optimizer.lrr=1"},
                     "--set optimizer.lrr: unknown key; did you mean 'optimizer.lr'?");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"optimiser.lr=1"},
                     "--set optimiser.lr: unknown key; did you mean 'optimizer.lr'?");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"bogus"}, "--set bogus: expected section.key=value");
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"trainer.global_batch_size=12"},
                     "--set trainer.global_batch_size: trainer.global_batch_size (12) must be a multiple");
  // Messages stay one line whatever the text holds.
  EXPECT_SET_REFUSED(kCopy, std::vector<std::string>{"run.na\nme=1"}, "--set run.na\\nme: unknown key");
  EXPECT_REFUSED(kCopy + "\"opti\\nmizer\": 1\n", "cfg.yaml:3:1: opti\\nmizer: unknown section");
  // The file is still checked before the overrides.
  EXPECT_SET_REFUSED(kCopy + "optimizer:\n  lrr: 1\n", std::vector<std::string>{"optimizer.lr=1"},
                     "cfg.yaml:4:3: optimizer.lrr");
}

TEST(ConfigYaml, FileErrors) {
  try {
    load_train_config_file("/no/such/config.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_NE(std::string(e.what()).find("/no/such/config.yaml: cannot read the config file"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(load_train_config_file(source_path("configs")), Error);
  // Messages name the file as given.
  const std::string path = ::testing::TempDir() + "mt_cfg_yaml_test.yaml";
  std::ofstream(path) << kCopy << "optimizer:\n  lr: yes\n";
  try {
    load_train_config_file(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":4:7: optimizer.lr: expected a number, got 'yes'"), std::string::npos)
        << e.what();
  }
  std::remove(path.c_str());
}

// configs/README.md embeds the key reference generated from the schema; MT_UPDATE_CONFIG_README=1 rewrites it.
TEST(ConfigYaml, ReadmeListsEveryKey) {
  const std::string path = source_path("configs/README.md");
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  const std::string begin = "<!-- BEGIN CONFIG KEYS", end = "<!-- END CONFIG KEYS -->";
  const size_t b = text.find(begin), e = text.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  const size_t body = text.find('\n', b) + 1;
  const std::string generated = schema::reference_markdown();
  if (std::getenv("MT_UPDATE_CONFIG_README")) {
    text = text.substr(0, body) + generated + text.substr(e);
    std::ofstream(path) << text;
    return;
  }
  const std::string current = text.substr(body, e - body);
  EXPECT_EQ(current, generated) << "configs/README.md is out of date: run MT_UPDATE_CONFIG_README=1 mt_tests "
                                   "--gtest_filter=ConfigYaml.ReadmeListsEveryKey";
  for (const schema::Key& k : schema::keys()) {
    const std::string cell = "| `" + k.path + "` |";
    const size_t first = current.find(cell);
    EXPECT_NE(first, std::string::npos) << k.path;
    EXPECT_EQ(current.find(cell, first + 1), std::string::npos) << k.path << " documented twice";
    EXPECT_FALSE(k.doc.empty()) << k.path;
  }
}

}  // namespace
}  // namespace mt::train

namespace mt::train {
namespace {
// Not text, or a quote left open: refused at the byte / line where it happens (found by the reliability corpus: an
// open quote ran on to the end of the file and the error named a key it had swallowed).
TEST(ConfigYaml, NonTextAndOpenQuotesAreRefusedWhereTheyAre) {
  const std::string copy = "data:\n  kind: selective_copying\n";
  auto msg = [](const std::string& y) {
    try {
      load_train_config(y, "cfg.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(msg("run:\n  name: a\xff"
                "b\n" +
                copy)
                .find("cfg.yaml:2:10: invalid UTF-8 (byte 0xff)"),
            std::string::npos);
  EXPECT_NE(msg(std::string("run:\n  name: a\0b\n", 17) + copy).find("cfg.yaml:2:10: control character 0x0"),
            std::string::npos);
  EXPECT_NE(msg("run:\n  name: \"abc\n" + copy).find("cfg.yaml:2:9: the quoted value is not closed on this line"),
            std::string::npos);
  EXPECT_NE(msg("run:\n  name: 'it''s\n" + copy).find("cfg.yaml:2:9: the quoted value is not closed"),
            std::string::npos);
  // Closed quotes, escaped quotes, quotes inside comments and UTF-8 names are fine.
  EXPECT_EQ(msg("run:\n  name: \"a \\\" b\"  # it's\n  out_dir: 'it''s'\n" + copy), "(accepted)");
  EXPECT_EQ(msg("run:\n  name: caf\xc3\xa9\n" + copy), "(accepted)");
}
}  // namespace
}  // namespace mt::train
