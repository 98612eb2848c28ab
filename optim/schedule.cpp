#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace mt::optim {

bool parse_schedule_kind(const std::string& name, ScheduleKind* out) {
  if (name == "cosine")
    *out = ScheduleKind::Cosine;
  else if (name == "constant")
    *out = ScheduleKind::Constant;
  else if (name == "linear")
    *out = ScheduleKind::Linear;
  else
    return false;
  return true;
}

double lr_at(const ScheduleOptions& s, long step) {
  if (s.warmup_steps > 0 && step < s.warmup_steps)
    return s.peak_lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  if (s.kind == ScheduleKind::Constant) return s.peak_lr;
  const long span = std::max(1L, s.total_steps - s.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / static_cast<double>(span));
  if (s.kind == ScheduleKind::Linear) return s.peak_lr + (s.min_lr - s.peak_lr) * progress;
  return s.min_lr + (s.peak_lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace mt::optim
