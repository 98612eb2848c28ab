// The target value the losses skip: a position (next-token target) or a row (class label) holding it is neither
// scored nor counted in the mean. PyTorch's ignore_index default, so data prepared for it keeps its meaning here.
#pragma once

#include <cstdint>

namespace mt {

constexpr int64_t kIgnoreIndex = -100;

}  // namespace mt
