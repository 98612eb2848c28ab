// `--set field=value` overrides of a MambaConfig (for `info` and `forward`), and small formatting helpers.
#pragma once

#include <string>
#include <vector>

#include "nn/config.h"

namespace mt::train {

// Each item "field=value" with field one of MambaConfig's names (d_model, n_layer, vocab_size, d_state, d_conv,
// expand, d_inner, dt_rank, dt_min, dt_max, dt_init_floor, dt_scale, norm_eps, conv_bias, proj_bias,
// tie_embeddings, bidirectional, norm). Unknown fields and unparsable values are mt::Error(Usage).
void apply_config_overrides(MambaConfig& c, const std::vector<std::string>& sets);
std::string group_thousands(int64_t v);  // 129135360 -> "129,135,360"

}  // namespace mt::train
