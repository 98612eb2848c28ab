// The subcommands of the mamba-train binary, one file each in train/cli/. Each registers its subcommand (named as
// in kCommands) with its options on the CLI11 app and returns the runner that main calls when it was chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace mt::train {

using Runner = std::function<int()>;

Runner add_train_command(CLI::App& app);       // train.cpp: the YAML-config trainer
Runner add_bench_command(CLI::App& app);       // bench.cpp: step time, tokens/s, peak memory; kernels; tokenizer
Runner add_export_command(CLI::App& app);      // export.cpp: checkpoint -> HuggingFace directory
Runner add_checkpoint_command(CLI::App& app);  // checkpoint.cpp: checkpoint verify
Runner add_prepare_command(CLI::App& app);     // prepare.cpp: text / FASTA -> token shards
Runner add_info_command(CLI::App& app);        // info.cpp: variants, parameter counts, memory estimate
Runner add_forward_command(CLI::App& app);     // forward.cpp: HF checkpoint -> logits / grads in HDF5
Runner add_evaluate_command(CLI::App& app);    // evaluate.cpp: metrics of a model on a data file
Runner add_predict_command(CLI::App& app);     // predict.cpp: class predictions / features of new inputs
Runner add_generate_command(CLI::App& app);    // generate.cpp: text / token ids from a language model

struct Command {
  const char* name;  // the subcommand's name on the command line
  Runner (*add)(CLI::App&);
};

// Every subcommand, in the order `mamba-train --help` lists them.
inline const Command kCommands[] = {
    {"train", add_train_command},           {"evaluate", add_evaluate_command}, {"predict", add_predict_command},
    {"generate", add_generate_command},     {"bench", add_bench_command},       {"export", add_export_command},
    {"checkpoint", add_checkpoint_command}, {"prepare", add_prepare_command},   {"info", add_info_command},
    {"forward", add_forward_command},
};

}  // namespace mt::train
