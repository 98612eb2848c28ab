// Loss curves as a self-contained SVG file (no dependencies, opens in any browser).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mt::train {

// Writes an SVG with a title, axes with round tick labels (step on x, loss on y: 1/2/5 x 10^k spacing), light grid
// lines, one polyline per non-empty series (train, val) and a legend naming them. Points with a non-finite loss
// are skipped (they never bend the axes). Empty series draw nothing (both empty: axes over [0, 1] and a
// "no data" note). The file is written atomically: a unique temporary file beside it, fsync, rename over `path`.
// Errors: mt::Error(Io) naming the path and the system error; the temporary file is removed.
void write_loss_svg(const std::string& path, const std::vector<std::pair<int64_t, double>>& train_loss,
                    const std::vector<std::pair<int64_t, double>>& val_loss, const std::string& title);

// The SVG text write_loss_svg writes (for tests and for callers that embed it).
std::string loss_svg(const std::vector<std::pair<int64_t, double>>& train_loss,
                     const std::vector<std::pair<int64_t, double>>& val_loss, const std::string& title);

}  // namespace mt::train
