// Token-id files: one sequence per line, whitespace-separated non-negative integers. Anything wrong is an
// mt::Error(Data) that names the file, the line and the column.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt::train {

// For `mamba-train forward`: all lines the same length, blank lines ignored. Returns an i64 tensor [B, L]. Ids must
// be < vocab_size (when vocab_size > 0).
Tensor read_ids_file(const std::string& path, int64_t vocab_size);

// For `mamba-train generate --prompt-ids`: one prompt per line, lengths may differ; a blank line is an error (it
// would be an empty prompt). Ids must be < vocab_size (when vocab_size > 0).
std::vector<std::vector<int64_t>> read_prompt_ids_file(const std::string& path, int64_t vocab_size);

}  // namespace mt::train
