// mamba-train export CHECKPOINT|RUN_DIR [--best] --hf DIR [--dtype f32|bf16]: a training checkpoint as a directory
// that HuggingFace-style readers and `evaluate --hf` / `predict --hf` / model.init_from read (train/inference.h
// save_export: language models as MambaForCausalLM, classifiers with their head, labels and data settings).
#include <cstdio>
#include <memory>
#include <vector>

#include "core/error.h"
#include "train/cli/commands.h"
#include "train/cli/model_options.h"
#include "train/inference.h"

namespace mt::train {

Runner add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a training checkpoint as a HuggingFace-style directory");
  struct Opts {
    std::string checkpoint, hf, dtype = "f32";
    bool best = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("checkpoint", o->checkpoint,
                  "checkpoint file (ckpt-NNNNNNNN.h5), or a run / checkpoint directory "
                  "(its newest valid checkpoint)")
      ->required();
  cmd->add_option("--hf", o->hf, "output directory (config.json, model.safetensors, tokenizer file)")->required();
  cmd->add_option("--dtype", o->dtype, "dtype of the stored weights: f32 | bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--best", o->best,
                "export the run's best checkpoint by checkpoint.monitor (the `best` file of its checkpoint "
                "directory) instead of the newest");
  return [o]() {
    const InferenceModel m = load_inference_model(o->checkpoint, "", {}, Device::cpu(), o->best);
    warn_skipped(m, "exporting");
    save_export(m, o->hf, dtype_from_name(o->dtype));
    const std::string what =
        m.classifier() ? str("a classifier of ", m.cls->num_classes(), " classes, ", m.cls->pooling(), " pooling")
                       : std::string("a language model");
    std::printf("exported %s (step %lld): %s, %lld parameters (%s) to %s\n", m.checkpoint.c_str(), (long long)m.step,
                what.c_str(), (long long)m.module().num_parameters(), o->dtype.c_str(), o->hf.c_str());
    return 0;
  };
}

}  // namespace mt::train
