// Subcommands of the mamba-train binary. Each registers its options on the CLI11 app and returns a runner.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "core/device.h"

namespace mt::train {

using Runner = std::function<int()>;

Runner add_info_command(CLI::App& app);     // mamba-train info: variants, parameter counts, memory estimate
Runner add_forward_command(CLI::App& app);  // mamba-train forward: HF checkpoint -> logits / grads in HDF5
Runner add_demo_command(CLI::App& app);     // mamba-train demo: fit a small byte-level LM, print the loss falling

// "auto" -> cuda when available, else cpu; otherwise Device::parse.
mt::Device resolve_device(const std::string& name);

}  // namespace mt::train
