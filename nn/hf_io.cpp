#include "nn/hf_io.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "nn/init.h"
#include "nn/safetensors.h"

namespace mt::nn {

namespace {
void make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error(ErrorKind::Io, str("cannot create directory '", dir, "': ", std::strerror(errno)));
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  MT_CHECK(f.good(), ErrorKind::Io, "cannot write '", path, "': ", std::strerror(errno));
  f << text;
  f.flush();
  MT_CHECK(f.good(), ErrorKind::Io, "write to '", path, "' failed: ", std::strerror(errno));
}
}  // namespace

std::map<std::string, Tensor> normalize_hf_names(std::map<std::string, Tensor> t, bool tied, const std::string& src) {
  auto old = t.find("backbone.embedding.weight");
  if (old != t.end()) {
    MT_CHECK(!t.count("backbone.embeddings.weight"), ErrorKind::Checkpoint, src,
             ": has both backbone.embedding.weight and backbone.embeddings.weight");
    t["backbone.embeddings.weight"] = old->second;
    t.erase(old);
  }
  if (tied) t.erase("lm_head.weight");
  return t;
}

namespace {

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The shards of DIR/model.safetensors.index.json, read and merged.
std::map<std::string, Tensor> load_sharded(const std::string& dir, const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  MT_CHECK(in.good(), ErrorKind::Checkpoint, "cannot open '", index_path, "': ", std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MT_CHECK(text.size() < (size_t(100) << 20), ErrorKind::Checkpoint, index_path, ": larger than 100 MB");
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  MT_CHECK(!j.is_discarded() && j.is_object(), ErrorKind::Checkpoint, index_path, ": not a JSON object");
  MT_CHECK(j.contains("weight_map") && j["weight_map"].is_object() && !j["weight_map"].empty(), ErrorKind::Checkpoint,
           index_path, ": no \"weight_map\" object naming the file of each tensor");
  std::map<std::string, std::vector<std::string>> by_file;  // shard -> tensor names the index puts there
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    MT_CHECK(it.value().is_string(), ErrorKind::Checkpoint, index_path, ": weight_map[\"", it.key(),
             "\"] is not a file name");
    const std::string f = it.value().get<std::string>();
    MT_CHECK(!f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos &&
                 f.find('\\') == std::string::npos && f.find('\0') == std::string::npos,
             ErrorKind::Checkpoint, index_path, ": weight_map[\"", it.key(), "\"] = \"", f,
             "\" is not a file name in the directory");
    by_file[f].push_back(it.key());
  }
  std::map<std::string, Tensor> out;
  for (auto& kv : by_file) {
    const std::string path = dir + "/" + kv.first;
    std::map<std::string, Tensor> shard = load_safetensors(path);
    for (const std::string& name : kv.second) {
      auto t = shard.find(name);
      MT_CHECK(t != shard.end(), ErrorKind::Checkpoint, index_path, " puts tensor '", name, "' in '", kv.first,
               "', which does not hold it");
      out[name] = t->second;
      shard.erase(t);
    }
    MT_CHECK(shard.empty(), ErrorKind::Checkpoint, path, ": tensor '", shard.begin()->first, "' is not in ", index_path,
             "'s weight_map");
  }
  return out;
}

}  // namespace

std::map<std::string, Tensor> load_hf_weights(const std::string& dir) {
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  if (is_file(single)) return load_safetensors(single);
  if (is_file(index)) return load_sharded(dir, index);
  MT_CHECK(!is_file(dir + "/pytorch_model.bin"), ErrorKind::Checkpoint, "'", dir,
           "' has pytorch_model.bin but no model.safetensors: only safetensors weights are read (convert them, e.g. "
           "with transformers' save_pretrained(safe_serialization=True))");
  throw Error(ErrorKind::Checkpoint,
              str("no weights in '", dir, "': '", single, "' does not exist (nor a sharded '", index, "')"));
}

std::unique_ptr<MambaLMHeadModel> load_hf_model(const std::string& dir, bool keep_f64) {
  MambaConfig cfg = load_hf_config(dir);
  const std::string weights = is_file(dir + "/model.safetensors") || !is_file(dir + "/model.safetensors.index.json")
                                  ? dir + "/model.safetensors"
                                  : dir + "/model.safetensors.index.json";
  std::map<std::string, Tensor> tensors = load_hf_weights(dir);
  bool all_f64 = !tensors.empty();
  for (auto& kv : tensors) all_f64 = all_f64 && kv.second.dtype() == DType::F64;
  auto model = std::make_unique<MambaLMHeadModel>(cfg);
  if (keep_f64 && all_f64) model->to(DType::F64);
  model->load_state_dict(normalize_hf_names(std::move(tensors), cfg.tie_embeddings, weights), true, weights);
  std::string bad = check_init_invariants(model->backbone, /*after_training=*/true);
  MT_CHECK(bad.empty(), ErrorKind::Checkpoint, weights, ": ", bad);
  return model;
}

void save_hf_model(const MambaLMHeadModel& model, const std::string& dir) {
  make_dir(dir);
  std::map<std::string, Tensor> sd;
  for (auto& kv : model.state_dict()) sd[kv.first] = kv.second.to(DType::F32);
  save_safetensors(dir + "/model.safetensors", sd, {{"format", "pt"}});
  write_text_file(dir + "/config.json", config_to_hf_json(model.config()));
}

}  // namespace mt::nn
