// Subcommands of the mamba-train binary. Each registers its options on the CLI11 app and returns a runner.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "core/device.h"

namespace mt::train {

using Runner = std::function<int()>;

Runner add_info_command(CLI::App& app);        // mamba-train info: variants, parameter counts, memory estimate
Runner add_forward_command(CLI::App& app);     // mamba-train forward: HF checkpoint -> logits / grads in HDF5
Runner add_demo_command(CLI::App& app);        // mamba-train demo: fit a small byte-level LM, print the loss falling
Runner add_train_command(CLI::App& app);       // mamba-train train CONFIG.yaml: the YAML-config trainer (cmd_train.cpp)
Runner add_bench_command(CLI::App& app);       // mamba-train bench CONFIG.yaml: tokens/s, step time, peak memory
Runner add_export_command(CLI::App& app);      // mamba-train export CHECKPOINT --hf DIR
Runner add_checkpoint_command(CLI::App& app);  // mamba-train checkpoint verify RUN_DIR
Runner add_prepare_command(CLI::App& app);     // mamba-train prepare: text / FASTA -> token shards (cmd_prepare.cpp)

// "auto" -> cuda when available, else cpu; otherwise Device::parse.
mt::Device resolve_device(const std::string& name);

}  // namespace mt::train
