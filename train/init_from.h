// model.init_from: the weights a run starts from (fine-tuning a pretrained model).
//
// The source is one of
//   - a HuggingFace directory: config.json with model.safetensors, or sharded model-*.safetensors listed by
//     model.safetensors.index.json (nn/hf_io.h), tensors f32 / bf16 / f16; an LM (MambaForCausalLM names) or a
//     classifier export (the same backbone names plus classifier.weight / classifier.bias);
//   - a run directory (or its checkpoint directory): its newest valid checkpoint;
//   - a training checkpoint file (ckpt-<step>.h5).
// The config loader takes the model's dimensions from the source (inspect_init_source: config.json, or a checkpoint's
// model_config_json); the trainer then copies the source's tensors into the new model (apply_init_tensors):
//   - every backbone tensor must be there with the model's shape, except the reverse direction of a bidirectional
//     (Caduceus) layer when the source is causal: it keeps its initialisation ("new");
//   - the embedding (and an untied lm_head) may have fewer rows than the model, whose vocabulary covers the
//     tokenizer: the source's rows fill the first ones, the others keep the model's fresh initialisation (normal,
//     std model.initializer_range): "extended";
//   - a classifier head is loaded when the source has one of the same shape (same number of classes) and, where the
//     source says, the same pooling; otherwise it starts fresh ("new");
//   - source tensors the model has no use for (an LM's untied lm_head under a classifier) are reported "unused".
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/config.h"
#include "nn/module.h"

namespace mt::train {

struct InitSource {
  std::string kind;     // "hf" | "checkpoint"
  std::string path;     // the HF directory, or the checkpoint file (a run directory resolved to its newest)
  MambaConfig config;   // the source's architecture
  std::string head;     // "lm" | "sequence_classification" (a checkpoint's model_head; an HF directory: by its tensors)
  std::string pooling;  // the source classifier's pooling when it says ("" otherwise)
  int64_t step = -1;    // a checkpoint's step
  std::string describe() const;  // "HuggingFace directory 'X'" / "checkpoint 'X' (step N)"
};

// What the source is and its dimensions, reading no tensor. mt::Error(Config) when `path` does not exist or is none of
// the three kinds (a directory without config.json and without a valid checkpoint, another file); mt::Error(Checkpoint)
// when the source is damaged (config.json unreadable, checkpoint invalid).
InitSource inspect_init_source(const std::string& path);

// The source's tensors under the model's parameter names (HF names normalised as nn/hf_io.h does; a checkpoint's
// model/ tensors). Checks the weights as the source's own model would read them: mt::Error(Checkpoint).
std::map<std::string, Tensor> load_init_tensors(const InitSource& src);

struct InitReport {
  std::vector<std::string> loaded, fresh, extended, unused;  // parameter / tensor names
  std::string note;                                          // why a classifier head starts fresh, or ""
  // One line per non-empty list: "loaded 26 tensors: backbone.embeddings.weight, backbone.layers.*.mixer.A_log (x2)
  // ...", "new: classifier.weight, classifier.bias (...)", "extended: backbone.embeddings.weight 50280 -> 50288 rows
  // (...)", "unused from the source: lm_head.weight".
  std::vector<std::string> lines() const;
};

// Copies `tensors` into `model` (a model whose parameters hold their fresh initialisation) per the rules above.
// pooling: the model's classifier pooling ("" for an LM). mt::Error(Checkpoint) naming the tensor when a backbone
// tensor is missing or has another shape. Changes no parameter when it throws.
InitReport apply_init_tensors(nn::Module& model, const std::map<std::string, Tensor>& tensors, const InitSource& src,
                              const std::string& pooling);

}  // namespace mt::train
