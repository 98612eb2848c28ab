#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt::optim {

double lr_at(const ScheduleOptions& s, long step) {
  if (s.warmup_steps > 0 && step < s.warmup_steps)
    return s.peak_lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  if (s.kind == "constant") return s.peak_lr;
  const long span = std::max(1L, s.total_steps - s.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / static_cast<double>(span));
  if (s.kind == "linear") return s.peak_lr + (s.min_lr - s.peak_lr) * progress;
  if (s.kind == "cosine") return s.min_lr + (s.peak_lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  throw Error(ErrorKind::Config, str("unknown schedule '", s.kind, "' (expected cosine, constant or linear)"));
}

}  // namespace mt::optim
