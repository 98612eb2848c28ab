#include "nn/hf_io.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

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

std::unique_ptr<MambaLMHeadModel> load_hf_model(const std::string& dir, bool keep_f64) {
  MambaConfig cfg = load_hf_config(dir);
  const std::string weights = dir + "/model.safetensors";
  std::map<std::string, Tensor> tensors = load_safetensors(weights);
  bool all_f64 = !tensors.empty();
  for (auto& kv : tensors) all_f64 = all_f64 && kv.second.dtype() == DType::F64;
  auto model = std::make_unique<MambaLMHeadModel>(cfg);
  if (keep_f64 && all_f64) model->to(DType::F64);
  model->load_state_dict(normalize_hf_names(std::move(tensors), cfg.tie_embeddings, weights), true, weights);
  std::string bad = check_init_invariants(model->backbone, /*after_training=*/true);
  MT_CHECK(bad.empty(), ErrorKind::Checkpoint, weights, ": ", bad);
  return model;
}

std::unique_ptr<MambaForSequenceClassification> load_hf_classifier(const std::string& dir, int64_t num_classes,
                                                                   const std::string& pooling) {
  MambaConfig cfg = load_hf_config(dir);
  const std::string weights = dir + "/model.safetensors";
  std::map<std::string, Tensor> tensors = load_safetensors(weights);
  std::unique_ptr<MambaForSequenceClassification> model;
  try {
    model = std::make_unique<MambaForSequenceClassification>(cfg, num_classes, pooling);
  } catch (const Error& e) {
    throw Error(ErrorKind::Checkpoint, str(dir, "/config.json: ", e.what()));
  }
  model->load_state_dict(normalize_hf_names(std::move(tensors), false, weights), true, weights);
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
