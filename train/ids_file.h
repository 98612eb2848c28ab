// Token-id files for `mamba-train forward`: one sequence per line, whitespace-separated non-negative integers,
// all lines the same length. Blank lines are ignored; anything else that is wrong is an mt::Error(Data) that
// names the file, the line and the column.
#pragma once

#include <string>

#include "core/tensor.h"

namespace mt::train {

// Returns an i64 tensor [B, L]. Ids must be < vocab_size (when vocab_size > 0).
Tensor read_ids_file(const std::string& path, int64_t vocab_size);

}  // namespace mt::train
