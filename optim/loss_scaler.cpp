#include "optim/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt::optim {

DynamicLossScaler::DynamicLossScaler(double init_scale, int64_t growth_interval, double growth, double backoff,
                                     bool enabled)
    : growth_interval_(growth_interval), growth_(growth), backoff_(backoff), enabled_(enabled) {
  MT_CHECK(std::isfinite(init_scale) && init_scale >= kMinScale && init_scale <= kMaxScale, ErrorKind::Config,
           "loss scaler: init_scale must be in [2^-24, 2^64], got ", init_scale);
  MT_CHECK(growth_interval >= 1, ErrorKind::Config, "loss scaler: growth_interval must be >= 1, got ", growth_interval);
  MT_CHECK(std::isfinite(growth) && growth >= 1.0, ErrorKind::Config, "loss scaler: growth factor must be >= 1, got ",
           growth);
  MT_CHECK(std::isfinite(backoff) && backoff > 0.0 && backoff < 1.0, ErrorKind::Config,
           "loss scaler: backoff factor must be in (0, 1), got ", backoff);
  state_.scale = enabled ? init_scale : 1.0;
}

void DynamicLossScaler::update(bool finite) {
  if (finite) {
    state_.nonfinite_streak = 0;
    if (!enabled_) return;
    if (++state_.good_steps >= growth_interval_) {
      state_.scale = std::min(state_.scale * growth_, kMaxScale);
      state_.good_steps = 0;
    }
    return;
  }
  ++state_.skipped_total;
  ++state_.nonfinite_streak;
  if (!enabled_) return;
  state_.scale = std::max(state_.scale * backoff_, kMinScale);
  state_.good_steps = 0;
}

void DynamicLossScaler::set_state(const LossScalerState& s) {
  MT_CHECK(std::isfinite(s.scale) && s.scale >= kMinScale && s.scale <= kMaxScale, ErrorKind::Checkpoint,
           "loss scaler state: scale must be a finite value in [2^-24, 2^64], got ", s.scale);
  MT_CHECK(s.good_steps >= 0 && s.skipped_total >= 0 && s.nonfinite_streak >= 0, ErrorKind::Checkpoint,
           "loss scaler state: negative counter (good_steps ", s.good_steps, ", skipped_total ", s.skipped_total,
           ", nonfinite_streak ", s.nonfinite_streak, ")");
  state_ = s;
  if (!enabled_) {  // a disabled scaler keeps 1 whatever the saved run used
    state_.scale = 1.0;
    state_.good_steps = 0;
  }
}

}  // namespace mt::optim
