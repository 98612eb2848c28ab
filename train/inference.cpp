#include "train/inference.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "data/bpe.h"
#include "data/dna.h"
#include "data/labelled.h"
#include "data/row_stream.h"
#include "data/text_dataset.h"
#include "nn/chunked.h"
#include "nn/hf_io.h"
#include "nn/safetensors.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/checkpoint_io.h"
#include "train/config/schema.h"
#include "train/run_dir.h"

namespace mt::train {

namespace {

using json = nlohmann::json;

constexpr int64_t kExportFormatVersion = 1;
const char* kTokenizerFile = "tokenizer.json";
const char* kByteDnaTokenizerFile = "mamba_tokenizer.json";

std::string read_text_file(const std::string& path, ErrorKind kind) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in.good(), kind, "cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  MT_CHECK(!in.bad(), kind, "cannot read '", path, "': ", std::strerror(errno));
  return ss.str();
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

// evaluate / predict / export change how inputs are read, never the model: only data.* and tokenizer.* keys.
void check_override_sections(const std::vector<std::string>& sets) {
  for (const std::string& s : sets) {
    const std::string key = s.substr(0, s.find('='));
    MT_CHECK(key.compare(0, 5, "data.") == 0 || key.compare(0, 10, "tokenizer.") == 0, ErrorKind::Config, "--set ", key,
             ": only data.* and tokenizer.* keys can be set here (the model comes from its checkpoint)");
  }
}

bool sets_key(const std::vector<std::string>& sets, const std::string& key) {
  for (const std::string& s : sets)
    if (s.compare(0, key.size() + 1, key + "=") == 0) return true;
  return false;
}

std::vector<std::string> parse_label_names(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  MT_CHECK(!j.is_discarded() && j.is_array(), ErrorKind::Checkpoint, where, ": label_names is not a JSON list");
  std::vector<std::string> out;
  for (const json& v : j) {
    MT_CHECK(v.is_string(), ErrorKind::Checkpoint, where, ": label_names holds a non-string ", v.dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

// A schema value from a JSON value of config.json's mamba_train.data (written by save_export).
schema::Value value_from_json(const schema::Key& k, const json& v, const std::string& where) {
  schema::Value out;
  auto bad = [&]() -> schema::Value {
    throw Error(ErrorKind::Checkpoint,
                str(where, ": mamba_train.data.", k.leaf(), " is ", v.dump(), ", expected ", schema::type_name(k)));
  };
  switch (k.type) {
    case schema::Type::Int:
      if (!v.is_number_integer()) return bad();
      out.i = v.get<int64_t>();
      break;
    case schema::Type::Float:
      if (!v.is_number()) return bad();
      out.f = v.get<double>();
      break;
    case schema::Type::Bool:
      if (!v.is_boolean()) return bad();
      out.b = v.get<bool>();
      break;
    case schema::Type::List:
      if (!v.is_array()) return bad();
      for (const json& e : v) {
        if (!e.is_string()) return bad();
        out.list.push_back(e.get<std::string>());
      }
      break;
    case schema::Type::String:
    case schema::Type::Enum:
      if (!v.is_string()) return bad();
      out.s = v.get<std::string>();
      break;
  }
  return out;
}

json value_to_json(const schema::Key& k, const schema::Value& v) {
  switch (k.type) {
    case schema::Type::Int: return v.i;
    case schema::Type::Float: return v.f;
    case schema::Type::Bool: return v.b;
    case schema::Type::List: return v.list;
    case schema::Type::String:
    case schema::Type::Enum: break;
  }
  return v.s;
}

// data.* keys that name files: not part of an export (the data is given to evaluate / predict).
bool is_path_key(const std::string& path) {
  return path == "data.path" || path == "data.val_path" || path == "data.class_files";
}

void load_from_checkpoint(InferenceModel& m, const std::string& path, const std::vector<std::string>& sets, bool best) {
  m.checkpoint = resolve_checkpoint(path, best, &m.skipped);
  const std::string& file = m.checkpoint;
  CheckpointData d = load_checkpoint(file);
  auto need = [&](const char* key) -> const std::string& {
    auto it = d.strings.find(key);
    MT_CHECK(it != d.strings.end(), ErrorKind::Checkpoint, "checkpoint '", file,
             "': not a mamba-train training checkpoint (no ", key, ")");
    return it->second;
  };
  const std::string head = need("model_head");
  MT_CHECK(head == "lm" || head == "sequence_classification", ErrorKind::Checkpoint, "checkpoint '", file,
           "': model.head ", head, " cannot be run here (lm and sequence_classification can)");
  const MambaConfig mc = config_from_hf_json(need("model_config_json"), file + ": model_config_json");
  m.cfg = load_train_config(need("config_yaml"), str("checkpoint '", file, "' (its config)"), sets, false);
  keep_pre_key_behaviour(m.cfg, need("config_yaml"));  // the model runs as it was trained
  if (auto fp = d.strings.find("data_fingerprint"); fp != d.strings.end()) m.data_fingerprint = fp->second;
  auto ln = d.strings.find("label_names");  // absent in checkpoints of integer-labelled runs and older ones
  if (ln != d.strings.end()) m.label_names = parse_label_names(ln->second, "checkpoint '" + file + "'");
  auto st = d.ints.find("step");
  m.step = st == d.ints.end() ? -1 : st->second;
  m.source = str("checkpoint ", file, " (step ", m.step, ")");
  std::map<std::string, Tensor> weights;
  const std::string prefix = "model/";
  for (auto& kv : d.tensors)
    if (kv.first.compare(0, prefix.size(), prefix) == 0) weights[kv.first.substr(prefix.size())] = kv.second;
  if (head == "lm") {
    m.lm = std::make_unique<nn::MambaLMHeadModel>(mc);
    m.lm->load_state_dict(weights, true, str("checkpoint '", file, "'"));
  } else {
    m.cls = std::make_unique<nn::MambaForSequenceClassification>(mc, m.cfg.model.num_classes, m.cfg.model.pooling);
    m.cls->load_state_dict(weights, true, str("checkpoint '", file, "'"));
  }
}

// What config.json of an export says about the model: its head, classes and pooling (a published HuggingFace LM
// directory, without mamba_train, is head lm).
struct ExportInfo {
  std::string cfg_path;
  nlohmann::json config, mt;  // config.json, and its mamba_train object (empty when absent)
  std::string head = "lm", pooling;
  int64_t num_classes = 0;
  std::vector<std::string> label_names;  // empty: integer labels
};

ExportInfo read_export_info(const std::string& dir) {
  std::error_code ec;
  MT_CHECK(std::filesystem::is_directory(dir, ec), ErrorKind::Checkpoint, "--hf '", dir, "': no such directory");
  ExportInfo x;
  x.cfg_path = dir + "/config.json";
  const std::string text = read_text_file(x.cfg_path, ErrorKind::Checkpoint);
  config_from_hf_json(text, x.cfg_path);  // a readable Mamba config, or one error naming the key
  x.config = json::parse(text);           // ... which it has checked to be a JSON object
  const json& j = x.config;
  x.mt = j.contains("mamba_train") && j["mamba_train"].is_object() ? j["mamba_train"] : json::object();
  auto bad = [&](const std::string& what) { throw Error(ErrorKind::Checkpoint, str(x.cfg_path, ": ", what)); };
  if (x.mt.contains("format_version") &&
      (!x.mt["format_version"].is_number_integer() || x.mt["format_version"].get<int64_t>() > kExportFormatVersion))
    bad(str("mamba_train.format_version ", x.mt["format_version"].dump(), " is newer than this mamba-train reads (",
            kExportFormatVersion, ")"));
  if (x.mt.contains("head")) {
    if (!x.mt["head"].is_string()) bad("mamba_train.head is not a string");
    x.head = x.mt["head"].get<std::string>();
  }
  if (x.head != "lm" && x.head != "sequence_classification")
    bad(str("mamba_train.head ", x.head, " cannot be run here (lm and sequence_classification can)"));
  if (x.head == "lm") return x;
  if (!j.contains("num_labels") || !j["num_labels"].is_number_integer() || j["num_labels"].get<int64_t>() < 2)
    bad("a classifier needs num_labels (an integer >= 2)");
  x.num_classes = j["num_labels"].get<int64_t>();
  if (!x.mt.contains("pooling") || !x.mt["pooling"].is_string()) bad("a classifier needs mamba_train.pooling");
  x.pooling = x.mt["pooling"].get<std::string>();
  // id2label {"0": name, ...}: names unless they are the integers themselves.
  std::vector<std::string> names(static_cast<size_t>(x.num_classes));
  bool named = false;
  for (int64_t k = 0; k < x.num_classes; ++k) {
    const std::string key = std::to_string(k);
    if (!j.contains("id2label") || !j["id2label"].is_object() || !j["id2label"].contains(key) ||
        !j["id2label"][key].is_string())
      bad(str("id2label has no name for class ", k));
    names[static_cast<size_t>(k)] = j["id2label"][key].get<std::string>();
    named = named || names[static_cast<size_t>(k)] != key;
  }
  if (named) x.label_names = names;
  return x;
}

void load_export_model(InferenceModel& m, const std::string& dir, const ExportInfo& x) {
  if (x.head == "lm")
    m.lm = nn::load_hf_model(dir);
  else
    m.cls = nn::load_hf_classifier(dir, x.num_classes, x.pooling);
}

void load_from_export(InferenceModel& m, const std::string& dir, const std::vector<std::string>& sets) {
  const ExportInfo x = read_export_info(dir);
  auto bad = [&](const std::string& what) { throw Error(ErrorKind::Checkpoint, str(x.cfg_path, ": ", what)); };
  TrainConfig base = schema::defaults();
  base.model.head = x.head;
  base.data.kind = x.head == "lm" ? "text" : "classification";
  if (x.head != "lm") {
    base.model.num_classes = x.num_classes;
    base.model.pooling = x.pooling;
  }
  m.label_names = x.label_names;
  if (is_file(dir + "/" + kTokenizerFile)) {
    base.tokenizer.kind = "bpe";
    base.tokenizer.path = dir + "/" + kTokenizerFile;
  } else if (is_file(dir + "/" + kByteDnaTokenizerFile)) {
    const std::string tp = dir + "/" + kByteDnaTokenizerFile;
    json t = json::parse(read_text_file(tp, ErrorKind::Checkpoint), nullptr, false);
    if (t.is_discarded() || !t.is_object() || !t.contains("kind") || !t["kind"].is_string() ||
        (t["kind"] != "byte" && t["kind"] != "dna"))
      throw Error(ErrorKind::Checkpoint, str(tp, ": expected {\"kind\": \"byte\"} or {\"kind\": \"dna\"}"));
    base.tokenizer.kind = t["kind"].get<std::string>();
  } else if (!sets_key(sets, "tokenizer.kind")) {
    bad(str("the directory has no ", kTokenizerFile, " or ", kByteDnaTokenizerFile,
            ": name the tokenizer with --set tokenizer.kind=byte|dna|bpe (and tokenizer.path for bpe)"));
  }
  if (x.mt.contains("data")) {
    if (!x.mt["data"].is_object()) bad("mamba_train.data is not an object");
    for (auto it = x.mt["data"].begin(); it != x.mt["data"].end(); ++it) {
      const schema::Key* k = schema::find("data." + it.key());
      if (k == nullptr) bad(str("mamba_train.data.", it.key(), " is not a data setting of this mamba-train"));
      k->set(base, value_from_json(*k, it.value(), x.cfg_path));
    }
  }
  if (x.mt.contains("objective")) {
    if (!x.mt["objective"].is_string()) bad("mamba_train.objective is not a string");
    base.trainer.objective = x.mt["objective"].get<std::string>();  // checked by the config loader
  }
  if (x.mt.contains("batch_size")) {  // absent in exports written before it was recorded: the default batch size
    if (!x.mt["batch_size"].is_number_integer() || x.mt["batch_size"].get<int64_t>() < 1)
      bad("mamba_train.batch_size is not a positive integer");
    base.trainer.micro_batch_size = x.mt["batch_size"].get<int64_t>();
    base.trainer.global_batch_size = base.trainer.micro_batch_size;
  }
  base.model.mamba.vocab_size = 0;  // the tokenizer's (the model itself is built from config.json)
  m.cfg = load_train_config(dump_train_config(base), x.cfg_path + " (mamba_train)", sets, false);
  m.hf_dir = dir;
  m.source = str("exported model ", dir);
  load_export_model(m, dir, x);
}

}  // namespace

std::string resolve_checkpoint(const std::string& path, bool best, std::vector<std::string>* skipped) {
  std::error_code ec;
  if (best) {
    MT_CHECK(std::filesystem::is_directory(path, ec), ErrorKind::Usage, "--best needs a run or checkpoint directory, '",
             path, "' is not one");
    return best_checkpoint(path);
  }
  if (std::filesystem::is_directory(path, ec)) {
    const std::string dir = checkpoint_dir_of(path);
    std::vector<std::string> passed;
    const std::string p = latest_checkpoint(dir, &passed);
    MT_CHECK(!p.empty(), ErrorKind::Checkpoint, "no valid checkpoint in '", dir, "'",
             passed.empty() ? std::string() : str(" (", passed.size(), " invalid; newest: ", passed[0], ")"));
    if (skipped) skipped->insert(skipped->end(), passed.begin(), passed.end());
    return p;
  }
  MT_CHECK(std::filesystem::exists(path, ec), ErrorKind::Checkpoint, "no such checkpoint or run directory '", path,
           "'");
  return path;
}

const nn::MambaBackbone& InferenceModel::backbone() const { return cls ? cls->backbone : lm->backbone; }
const nn::Module& InferenceModel::module() const {
  if (cls) return *cls;
  return *lm;
}

std::vector<std::string> InferenceModel::class_labels() const {
  if (!label_names.empty()) return label_names;
  std::vector<std::string> out;
  for (int64_t k = 0; k < (cls ? cls->num_classes() : 0); ++k) out.push_back(std::to_string(k));
  return out;
}

std::string InferenceModel::input_format() const {
  if (classifier() || format_overridden) return cfg.data.format;
  return cfg.tokenizer.kind == "dna" ? "fasta" : "lines";
}

InferenceModel load_inference_model(const std::string& path, const std::string& hf_dir,
                                    const std::vector<std::string>& sets, Device device, bool best) {
  MT_CHECK(path.empty() != hf_dir.empty(), ErrorKind::Usage,
           path.empty() ? "name the model: a run directory, a checkpoint, or --hf DIR"
                        : "name one model: a run directory / checkpoint or --hf DIR, not both");
  check_override_sections(sets);
  InferenceModel m;
  MT_CHECK(!best || hf_dir.empty(), ErrorKind::Usage, "--best picks a run's checkpoint; it does not apply to --hf");
  if (!path.empty())
    load_from_checkpoint(m, path, sets, best);
  else
    load_from_export(m, hf_dir, sets);
  m.format_overridden = sets_key(sets, "data.format");
  if (m.classifier()) {
    MT_CHECK(m.label_names.empty() || static_cast<int64_t>(m.label_names.size()) == m.cls->num_classes(),
             ErrorKind::Checkpoint, m.source, ": ", m.label_names.size(), " label names for ", m.cls->num_classes(),
             " classes");
    if (!m.cfg.data.label_names.empty() && m.cfg.data.label_names != m.label_names && !m.label_names.empty())
      throw Error(ErrorKind::Config, str("data.label_names: the model's classes are named ",
                                         nlohmann::json(m.label_names).dump(), "; they cannot be renamed here"));
  }
  m.device = device;
  if (m.lm) m.lm->to(device);
  if (m.cls) m.cls->to(device);
  return m;
}

void save_export(const InferenceModel& m, const std::string& dir, DType dtype) {
  MT_CHECK(dtype == DType::F32 || dtype == DType::BF16, ErrorKind::Usage, "export: --dtype f32 or bf16, got ",
           dtype_name(dtype));
  ensure_directory(dir);
  std::map<std::string, Tensor> sd;
  for (auto& kv : m.module().state_dict()) sd[kv.first] = kv.second.to(dtype);
  save_safetensors(dir + "/model.safetensors", sd, {{"format", "pt"}});

  json j = json::parse(config_to_hf_json(m.mamba()));
  json mt = json::object();
  mt["format_version"] = kExportFormatVersion;
  if (m.classifier()) {
    const std::vector<std::string> labels = m.class_labels();
    j["architectures"] = json::array({"MambaForSequenceClassification"});
    j["num_labels"] = m.cls->num_classes();
    json id2label = json::object(), label2id = json::object();
    for (size_t k = 0; k < labels.size(); ++k) {
      id2label[std::to_string(k)] = labels[k];
      label2id[labels[k]] = k;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
    mt["head"] = "sequence_classification";
    mt["pooling"] = m.cls->pooling();
    mt["head_tensors"] = json::array({"classifier.weight", "classifier.bias"});
  } else {
    mt["head"] = "lm";
    mt["objective"] = m.cfg.trainer.objective;  // clm (next token) or mlm (masked tokens)
  }
  mt["tokenizer"] = m.cfg.tokenizer.kind;
  // evaluate / predict --hf batch as the run did by default: on the GPU another batch size changes the GEMMs' shapes
  // and with them the last bits of the probabilities.
  mt["batch_size"] = m.cfg.trainer.micro_batch_size;
  json data = json::object();
  for (const schema::Key& k : schema::keys())
    if (k.section() == "data" && !is_path_key(k.path)) data[k.leaf()] = value_to_json(k, k.get(m.cfg));
  if (m.classifier()) data["label_names"] = m.label_names;
  mt["data"] = data;
  j["mamba_train"] = mt;
  const std::string cfg_text = j.dump(2) + "\n";
  write_file_atomic(dir + "/config.json", cfg_text.data(), cfg_text.size());

  // One tokenizer file; a stale one of the other kind would be read first.
  std::error_code ec;
  if (m.cfg.tokenizer.kind == "bpe") {
    const std::string tok = read_text_file(m.cfg.tokenizer.path, ErrorKind::Data);
    write_file_atomic(dir + "/" + kTokenizerFile, tok.data(), tok.size());
    std::filesystem::remove(dir + "/" + kByteDnaTokenizerFile, ec);
  } else {
    const std::string tok = json{{"kind", m.cfg.tokenizer.kind}}.dump() + "\n";
    write_file_atomic(dir + "/" + kByteDnaTokenizerFile, tok.data(), tok.size());
    std::filesystem::remove(dir + "/" + kTokenizerFile, ec);
  }
}

void for_each_input_batch(const InferenceModel& m, const std::vector<std::string>& files, bool labels,
                          int64_t batch_size, const std::function<void(std::vector<InputRow>&)>& on_batch,
                          InputStats* stats) {
  MT_CHECK(batch_size >= 1, ErrorKind::Usage, "--batch-size must be >= 1, got ", batch_size);
  const TrainConfig& c = m.cfg;
  data::RowSpec spec;
  spec.format = m.input_format();
  spec.text_column = c.data.text_column;
  spec.label_column = c.data.label_column;
  spec.labels = labels && spec.format != "fasta";
  MT_CHECK(!labels || m.classifier(), ErrorKind::Internal, "labels of a language model's inputs");
  MT_CHECK(!labels || spec.format != "lines", ErrorKind::Config, "data.format lines has no labels");
  if (labels && spec.format == "fasta")
    MT_CHECK(static_cast<int64_t>(files.size()) == m.cls->num_classes(), ErrorKind::Usage, files.size(),
             " FASTA file(s) for ", m.cls->num_classes(),
             " classes: give one file per class, in class order (--set data.class_files=A.fa,B.fa)");
  std::unique_ptr<data::BpeTokenizer> bpe;
  if (c.tokenizer.kind == "bpe") bpe = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::load(c.tokenizer.path));
  const int64_t vocab = m.mamba().vocab_size;
  const int64_t num_classes = m.classifier() ? m.cls->num_classes() : 0;
  InputStats local;
  InputStats& st = stats ? *stats : local;
  int64_t next_row = 0;
  std::vector<InputRow> batch;
  auto bad = [&](const std::string& where, const std::string& problem) {
    const std::string msg = where + ": " + problem;
    MT_CHECK(c.data.bad_rows == "skip", ErrorKind::Data, msg, " (data.bad_rows: skip would skip and count such rows)");
    ++st.skipped;
    if (st.skipped_examples.size() < 5) st.skipped_examples.push_back(msg);
  };
  for (size_t k = 0; k < files.size(); ++k) {
    data::stream_rows(files[k], spec, [&](data::Row& r) {
      InputRow in;
      in.row = next_row++;
      const std::string where = str(files[k], ":", r.line);
      if (!r.problem.empty()) return bad(where, r.problem);
      if (labels) {
        if (spec.format == "fasta") {
          in.label = static_cast<int64_t>(k);
        } else {
          std::string problem;
          in.label = data::class_index(r.label, m.label_names, num_classes, &problem);
          if (in.label < 0) return bad(where, problem);
        }
      }
      bool truncated = false;
      const std::string problem =
          data::encode_row_text(r.text, c.tokenizer.kind, c.data.seq_len, in.ids, &truncated, bpe.get());
      if (!problem.empty()) return bad(where, problem);
      for (int32_t id : in.ids)
        if (id >= vocab)
          return bad(where, str("token id ", id, " is outside the model's vocabulary (", vocab, " ids)"));
      st.truncated += truncated;
      ++st.rows;
      batch.push_back(std::move(in));
      if (static_cast<int64_t>(batch.size()) == batch_size) {
        on_batch(batch);
        batch.clear();
      }
    });
  }
  if (!batch.empty()) on_batch(batch);
}

BatchOutputs run_batch(const InferenceModel& m, const std::vector<InputRow>& rows, const ForwardRequest& req) {
  NoGradGuard ng;
  BatchOutputs out;
  const int64_t B = static_cast<int64_t>(rows.size());
  if (B == 0) return out;
  int64_t L = 1;
  for (const InputRow& r : rows) L = std::max<int64_t>(L, static_cast<int64_t>(r.ids.size()));
  Tensor ids = Tensor::zeros({B, L}, DType::I64), mask = Tensor::zeros({B, L}, DType::F32);
  int64_t* ip = ids.data<int64_t>();
  float* mp = mask.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < rows[static_cast<size_t>(b)].ids.size(); ++t) {
      ip[b * L + static_cast<int64_t>(t)] = rows[static_cast<size_t>(b)].ids[t];
      mp[b * L + static_cast<int64_t>(t)] = 1.0f;
    }
  nn::ForwardOptions fo;
  fo.compute_dtype = req.compute;
  fo.mask = mask.to(m.device);
  const nn::BackboneOutput bo = m.backbone().forward(ids.to(m.device), fo);
  const std::string own = m.classifier() ? m.cls->pooling() : "mean";
  const std::string pooling = req.pooling.empty() ? own : req.pooling;
  Tensor features;
  if (m.classifier() && (req.probs || (req.pooled && pooling == own))) features = m.cls->features(bo, fo);
  if (req.probs) {
    MT_CHECK(m.classifier(), ErrorKind::Internal, "class probabilities of a language model");
    const Tensor logits = m.cls->classify(features, req.compute).to(Device::cpu()).to(DType::F64).contiguous();
    const int64_t C = logits.size(1);
    out.probs.resize(static_cast<size_t>(B * C));
    for (int64_t b = 0; b < B; ++b) softmax_row(logits.data<double>() + b * C, C, out.probs.data() + b * C);
  }
  if (req.pooled) {
    const Tensor f = features.defined() && pooling == own
                         ? features
                         : nn::pool_features(bo, fo.mask, pooling, m.mamba(), req.compute);
    out.pooled = f.to(Device::cpu()).to(DType::F32).contiguous();
  }
  if (req.hidden) out.hidden = bo.last_hidden_state.to(Device::cpu()).to(DType::F32).contiguous();
  return out;
}

std::vector<int32_t> token_text_bytes(const TrainConfig& c) {
  if (c.data.kind == "selective_copying") return {};
  if (c.tokenizer.kind == "dna") {
    std::vector<int32_t> b(static_cast<size_t>(data::kDnaVocab), 1);
    b[data::kDnaPad] = b[data::kDnaEod] = 0;
    return b;
  }
  if (c.tokenizer.kind == "bpe") {
    const data::BpeTokenizer t = data::BpeTokenizer::load(c.tokenizer.path);
    std::vector<int32_t> b(static_cast<size_t>(t.vocab_size()));
    for (int32_t id = 0; id < t.vocab_size(); ++id)
      b[static_cast<size_t>(id)] = static_cast<int32_t>(t.token_byte_length(id));
    if (t.eos_id() >= 0) b[static_cast<size_t>(t.eos_id())] = 0;
    return b;
  }
  return std::vector<int32_t>(256, 1);
}

LanguageModelReport evaluate_language_model(const InferenceModel& m, const std::string& file, int64_t batch_size,
                                            DType compute) {
  MT_CHECK(!m.classifier(), ErrorKind::Internal, "evaluate_language_model on a classifier");
  MT_CHECK(batch_size >= 1, ErrorKind::Usage, "--batch-size must be >= 1, got ", batch_size);
  const TrainConfig& c = m.cfg;
  MT_CHECK(c.data.kind == "text", ErrorKind::Usage, "evaluate: a language model of data.kind ", c.data.kind,
           " has no data file to score (its evaluation during training is in metrics.jsonl)");
  MT_CHECK(c.trainer.objective != "mlm", ErrorKind::Usage,
           "evaluate: the model was trained with trainer.objective mlm (masked tokens); evaluate scores next-token "
           "language models and classifiers (its masked loss during training is in metrics.jsonl; predict "
           "--embeddings gives its features)");
  // Any length of at least 2 tokens forms windows; the dataset's own windows are not used.
  const data::TextDataset ds(file, 0.0, 2, c.tokenizer.kind, c.tokenizer.path);
  const int64_t vocab = m.mamba().vocab_size;
  MT_CHECK(ds.vocab_size() <= vocab, ErrorKind::Data, file, ": its tokens have a vocabulary of ", ds.vocab_size(),
           " ids, the model has ", vocab);
  const std::vector<int32_t> bytes = token_text_bytes(c);
  const int64_t n = ds.size(), L = c.data.seq_len;
  LanguageModelReport r;
  r.bytes = bytes.empty() ? -1 : 0;
  nn::ForwardOptions fo;
  fo.compute_dtype = compute;
  auto score = [&](int64_t first, int64_t rows, int64_t len) {
    NoGradGuard ng;
    Tensor ids = Tensor::empty({rows, len}, DType::I64);
    int64_t* p = ids.data<int64_t>();
    for (int64_t w = 0; w < rows; ++w) ds.read_tokens(first + w * len, len, p + w * len);
    const int64_t scored = rows * (len - 1);
    for (int64_t w = 0; w < rows; ++w)
      for (int64_t t = 1; t < len && r.bytes >= 0; ++t) {
        const int64_t id = p[w * len + t];
        r.bytes += id < static_cast<int64_t>(bytes.size()) ? bytes[static_cast<size_t>(id)] : 0;
      }
    const Tensor dev_ids = ids.to(m.device);
    const Tensor starts = c.data.reset_at_document_end ? data::document_starts(ids, ds.eod_id()) : Tensor();
    fo.reset = starts.defined() ? starts.to(m.device) : starts;  // documents read alone, as in training
    // trainer.chunk_len (a run over long sequences): the windows chunk by chunk, one chunk's activations at a time.
    const int64_t chunk = c.trainer.chunk_len > 0 && c.trainer.chunk_len < len ? c.trainer.chunk_len : 0;
    const Tensor loss = chunk > 0 ? nn::chunked_lm_loss(*m.lm, dev_ids, dev_ids, chunk, fo)
                                  : m.lm->forward(dev_ids, fo, /*with_loss=*/true, dev_ids, /*with_logits=*/false).loss;
    r.nats += loss.item() * static_cast<double>(scored);
    r.n += scored;
  };
  const int64_t full = n / L;
  for (int64_t w = 0; w < full; w += batch_size) score(w * L, std::min(batch_size, full - w), L);
  if (n - full * L >= 2) score(full * L, 1, n - full * L);
  return r;
}

}  // namespace mt::train
