// HuggingFace checkpoint directories: config.json + model.safetensors (transformers' MambaForCausalLM names, or
// the original state-spaces names with `backbone.embedding.weight`). lm_head.weight may be absent when tied.
// Larger models come sharded: model.safetensors.index.json {"metadata": {...}, "weight_map": {tensor: file}} and the
// files it names (model-00001-of-00002.safetensors, ...). Tensors may be f32, bf16, f16 (or f64): loading converts
// them to the parameters' dtype.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "nn/heads.h"

namespace mt::nn {

// Every tensor of DIR's weights under the file's names: DIR/model.safetensors, else the shards that
// DIR/model.safetensors.index.json lists (each tensor must be in the file the index names, and each shard's tensors
// in the index). mt::Error(Checkpoint) naming the file for a missing or bad file, index or tensor.
std::map<std::string, Tensor> load_hf_weights(const std::string& dir);

// Read DIR/config.json and DIR's weights (load_hf_weights) into a new model (parameters in f32 unless keep_dtype_f64
// and the file is f64, for exact checks). Every failure is an mt::Error(Checkpoint) naming the file and tensor.
std::unique_ptr<MambaLMHeadModel> load_hf_model(const std::string& dir, bool keep_f64 = false);
// Map a file's tensor names onto ours: backbone.embedding.weight -> backbone.embeddings.weight; a tied
// lm_head.weight is dropped. Throws on conflicting duplicates.
std::map<std::string, Tensor> normalize_hf_names(std::map<std::string, Tensor> tensors, bool tied,
                                                 const std::string& source);
// Write DIR/config.json and DIR/model.safetensors (creates DIR). Tensors in f32.
void save_hf_model(const MambaLMHeadModel& model, const std::string& dir);

}  // namespace mt::nn
