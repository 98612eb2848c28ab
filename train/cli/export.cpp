// mamba-train export CHECKPOINT|RUN_DIR [--best] --hf DIR: a training checkpoint as a HuggingFace directory.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "core/error.h"
#include "nn/hf_io.h"
#include "train/ckpt/checkpoint.h"
#include "train/cli/commands.h"

namespace mt::train {

Runner add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a training checkpoint as a HuggingFace directory");
  struct Opts {
    std::string checkpoint, hf;
    bool best = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("checkpoint", o->checkpoint,
                  "checkpoint file (ckpt-NNNNNNNN.h5), or a run / checkpoint directory "
                  "(its newest valid checkpoint)")
      ->required();
  cmd->add_option("--hf", o->hf, "output directory (config.json + model.safetensors)")->required();
  cmd->add_flag("--best", o->best,
                "export the run's best checkpoint by checkpoint.monitor (the `best` file of its checkpoint "
                "directory) instead of the newest");
  return [o]() {
    std::string path = o->checkpoint;
    std::error_code ec;
    if (o->best) {
      MT_CHECK(std::filesystem::is_directory(path, ec), ErrorKind::Usage,
               "--best needs a run or checkpoint directory, '", path, "' is not one");
      path = best_checkpoint(path);
    } else if (std::filesystem::is_directory(path, ec)) {
      const std::string dir = checkpoint_dir_of(path);
      std::vector<std::string> skipped;
      path = latest_checkpoint(dir, &skipped);
      MT_CHECK(!path.empty(), ErrorKind::Checkpoint, "no valid checkpoint in '", dir, "'");
      // Say so when a newer checkpoint was passed over: the export is then not of the last step saved.
      for (const std::string& s : skipped) std::printf("warning: skipping invalid checkpoint %s\n", s.c_str());
      if (!skipped.empty()) std::printf("exporting %s, the newest valid checkpoint\n", path.c_str());
    }
    CheckpointData d = load_checkpoint(path);
    auto cfg_it = d.strings.find("model_config_json");
    MT_CHECK(cfg_it != d.strings.end(), ErrorKind::Checkpoint, "checkpoint '", path,
             "': not a mamba-train training checkpoint (no model_config_json)");
    MT_CHECK(d.strings["model_head"] == "lm", ErrorKind::Checkpoint, "checkpoint '", path, "': model.head is ",
             d.strings["model_head"], "; only language models export to MambaForCausalLM");
    const MambaConfig mc = config_from_hf_json(cfg_it->second, path + ": model_config_json");
    nn::MambaLMHeadModel model(mc);
    std::map<std::string, Tensor> weights;
    const std::string prefix = "model/";
    for (auto& kv : d.tensors)
      if (kv.first.compare(0, prefix.size(), prefix) == 0) weights[kv.first.substr(prefix.size())] = kv.second;
    model.load_state_dict(weights, true, str("checkpoint '", path, "'"));
    nn::save_hf_model(model, o->hf);
    std::printf("exported %s (step %lld, %lld parameters) to %s\n", path.c_str(), (long long)d.ints["step"],
                (long long)model.num_parameters(), o->hf.c_str());
    return 0;
  };
}

}  // namespace mt::train
