// Learning-rate schedules: linear warmup then cosine decay to a floor (the Mamba recipe), constant, linear.
#pragma once

#include <string>

namespace mt::optim {

enum class ScheduleKind { Cosine, Constant, Linear };

// "cosine" | "constant" | "linear" (scheduler.kind); false for any other word.
bool parse_schedule_kind(const std::string& name, ScheduleKind* out);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::Cosine;
  double peak_lr = 1e-3;
  double min_lr = 1e-5;
  long warmup_steps = 0;
  long total_steps = 1;
};

// LR for optimizer step `step` (0-based): warmup ramps linearly from peak/warmup to peak over warmup_steps, then
// cosine: min + (peak-min) * (1 + cos(pi * progress)) / 2; linear: peak -> min; constant: peak.
double lr_at(const ScheduleOptions& s, long step);

}  // namespace mt::optim
