#include "train/init_from.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "core/error.h"
#include "nn/hf_io.h"
#include "train/ckpt/checkpoint.h"
#include "train/config/config.h"

namespace mt::train {

namespace {

namespace fs = std::filesystem;

bool is_resizable(const std::string& name) { return name == "backbone.embeddings.weight" || name == "lm_head.weight"; }

// "backbone.layers.12.mixer.A_log" -> "backbone.layers.*.mixer.A_log": one entry per kind of tensor.
std::string pattern_of(const std::string& name) {
  const std::string key = ".layers.";
  const size_t at = name.find(key);
  if (at == std::string::npos) return name;
  size_t end = at + key.size();
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == at + key.size()) return name;
  return name.substr(0, at + key.size()) + "*" + name.substr(end);
}

std::string compact_list(const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, int>> patterns;  // in first-seen order
  for (const std::string& n : names) {
    const std::string p = pattern_of(n);
    auto it = std::find_if(patterns.begin(), patterns.end(), [&](const auto& e) { return e.first == p; });
    if (it == patterns.end())
      patterns.emplace_back(p, 1);
    else
      ++it->second;
  }
  std::string s;
  for (const auto& e : patterns)
    s += (s.empty() ? "" : ", ") + e.first + (e.second > 1 ? str(" (x", e.second, ")") : std::string());
  return s;
}

// The pooling a classifier export states in its config.json (mamba_train.pooling, as `mamba-train export` writes
// it), or "".
std::string hf_pooling(const std::string& dir) {
  std::ifstream in(dir + "/config.json", std::ios::binary);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("mamba_train") || !j["mamba_train"].is_object()) return "";
  const nlohmann::json& mt = j["mamba_train"];
  return mt.contains("pooling") && mt["pooling"].is_string() ? mt["pooling"].get<std::string>() : "";
}

}  // namespace

std::string InitSource::describe() const {
  if (kind == "hf") return str("HuggingFace directory '", path, "'");
  return str("checkpoint '", path, "' (step ", step, ")");
}

InitSource inspect_init_source(const std::string& path) {
  std::error_code ec;
  MT_CHECK(fs::exists(path, ec), ErrorKind::Config, "no such file or directory '", path, "'");
  InitSource s;
  std::string file;
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(fs::path(path) / "config.json", ec)) {
      s.kind = "hf";
      s.path = path;
      s.config = load_hf_config(path);
      s.pooling = hf_pooling(path);
      return s;
    }
    const std::string dir = checkpoint_dir_of(path);
    std::vector<std::string> skipped;
    file = latest_checkpoint(dir, &skipped);
    MT_CHECK(!file.empty(), ErrorKind::Config, "'", path,
             "' is neither a HuggingFace directory (no config.json) nor a run or checkpoint directory with a valid "
             "checkpoint",
             skipped.empty() ? std::string() : str(" (", skipped.size(), " invalid: ", skipped.front(), ")"));
  } else {
    MT_CHECK(checkpoint_step_from_name(fs::path(path).filename().string()) >= 0, ErrorKind::Config, "'", path,
             "' is not a checkpoint file (ckpt-<step>.h5); name a HuggingFace directory, a run directory or a "
             "checkpoint");
    file = path;
  }
  const CheckpointData d = load_checkpoint_metadata(file);
  auto text = [&](const char* key) -> std::string {
    auto it = d.strings.find(key);
    MT_CHECK(it != d.strings.end(), ErrorKind::Checkpoint, "checkpoint '", file,
             "': not a mamba-train training checkpoint (no '", key, "')");
    return it->second;
  };
  s.kind = "checkpoint";
  s.path = file;
  s.config = config_from_hf_json(text("model_config_json"), file + ": model_config_json");
  s.head = text("model_head");
  auto st = d.ints.find("step");
  s.step = st != d.ints.end() ? st->second : checkpoint_step_from_name(fs::path(file).filename().string());
  if (s.head != "lm") {
    const auto values = config_values_from_yaml(text("config_yaml"), file + ": config_yaml");
    auto p = values.find("model.pooling");
    if (p != values.end()) s.pooling = p->second;
  }
  return s;
}

std::map<std::string, Tensor> load_init_tensors(const InitSource& src) {
  if (src.kind == "hf")
    return nn::normalize_hf_names(nn::load_hf_weights(src.path), src.config.tie_embeddings, src.path);
  std::map<std::string, Tensor> out;
  for (auto& kv : load_checkpoint(src.path).tensors)
    if (kv.first.rfind("model/", 0) == 0) out[kv.first.substr(6)] = kv.second;
  MT_CHECK(!out.empty(), ErrorKind::Checkpoint, "checkpoint '", src.path, "': no model/ tensors");
  return out;
}

std::vector<std::string> InitReport::lines() const {
  std::vector<std::string> out;
  if (!loaded.empty()) out.push_back(str("loaded ", loaded.size(), " tensors: ", compact_list(loaded)));
  if (!fresh.empty())
    out.push_back(str("new (initialised here): ", compact_list(fresh), note.empty() ? "" : " (" + note + ")"));
  for (const std::string& e : extended)
    out.push_back(str("extended: ", e,
                      " (the tokenizer has more ids; new rows initialised as the embedding: normal, "
                      "std model.initializer_range)"));
  if (!unused.empty()) out.push_back(str("unused from the source: ", compact_list(unused)));
  return out;
}

InitReport apply_init_tensors(nn::Module& model, const std::map<std::string, Tensor>& tensors, const InitSource& src,
                              const std::string& pooling) {
  InitReport rep;
  const auto named = model.named_parameters();
  // The classifier head comes as a whole or not at all.
  bool head_loadable = true;
  bool has_head = false;
  for (const auto& np : named) {
    if (np.first.rfind("classifier.", 0) != 0) continue;
    has_head = true;
    auto it = tensors.find(np.first);
    if (it == tensors.end()) {
      head_loadable = false;
      if (src.head == "sequence_classification" || tensors.count("classifier.weight"))
        rep.note = str("the source's classifier lacks ", np.first);
    } else if (it->second.shape() != np.second->shape()) {
      head_loadable = false;
      rep.note = str("the source's ", np.first, " is ", shape_str(it->second.shape()), ", this model's ",
                     shape_str(np.second->shape()), ": other labels");
    }
  }
  if (has_head && head_loadable && !src.pooling.empty() && src.pooling != pooling) {
    head_loadable = false;
    rep.note = str("the source's classifier pools by ", src.pooling, ", this model by ", pooling);
  }
  std::vector<std::pair<Tensor*, Tensor>> whole, rows;
  std::set<std::string> used;
  for (const auto& np : named) {
    const std::string& name = np.first;
    Tensor* p = np.second;
    auto it = tensors.find(name);
    const bool head = name.rfind("classifier.", 0) == 0;
    if (it == tensors.end() || (head && !head_loadable)) {
      // Every backbone tensor must come from the source, except the reverse direction of a Caduceus bidirectional
      // layer when the source is causal: that direction keeps its initialisation.
      const bool reverse = name.find(".mixer.reverse.") != std::string::npos && !src.config.bidirectional;
      MT_CHECK(name.rfind("backbone.", 0) != 0 || reverse, ErrorKind::Checkpoint, "model.init_from: ", src.describe(),
               " has no tensor '", name, "' (the model expects ", p->describe(), ")");
      rep.fresh.push_back(name);
      continue;
    }
    const Tensor& t = it->second;
    MT_CHECK(is_floating(t.dtype()), ErrorKind::Checkpoint, "model.init_from: ", src.describe(), ": tensor ", name,
             " has dtype ", dtype_name(t.dtype()), ", expected a float dtype");
    used.insert(name);
    if (t.shape() == p->shape()) {
      whole.emplace_back(p, t);
      rep.loaded.push_back(name);
      continue;
    }
    const bool fewer_rows =
        is_resizable(name) && t.dim() == 2 && p->dim() == 2 && t.size(1) == p->size(1) && t.size(0) < p->size(0);
    MT_CHECK(fewer_rows, ErrorKind::Checkpoint, "model.init_from: ", src.describe(), ": size mismatch for ", name,
             ": source ", shape_str(t.shape()), ", model ", shape_str(p->shape()));
    rows.emplace_back(p, t);
    rep.loaded.push_back(name);
    rep.extended.push_back(str(name, " ", t.size(0), " -> ", p->size(0), " rows"));
  }
  for (const auto& kv : tensors)
    if (!used.count(kv.first)) rep.unused.push_back(kv.first);
  NoGradGuard ng;
  for (auto& c : whole) c.first->copy_(c.second);
  for (auto& c : rows) c.first->as_strided(c.second.shape(), c.first->strides(), c.first->offset()).copy_(c.second);
  return rep;
}

}  // namespace mt::train
