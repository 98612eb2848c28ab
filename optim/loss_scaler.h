// Dynamic loss scaling for fp16 training (Micikevicius et al., "Mixed Precision Training").
//
// The loss is multiplied by scale() before backward so that small fp16 gradients do not flush to zero; the
// optimizer multiplies the gradients by 1 / scale() (fused into AdamW's grad_scale). Each step's outcome is fed
// back with update(finite):
//   finite:      good_steps += 1; when good_steps reaches growth_interval: scale *= growth, good_steps = 0;
//                the non-finite streak resets to 0.
//   non-finite:  the step is skipped by the caller; scale = max(scale * backoff, kMinScale), good_steps = 0,
//                skipped_total += 1, nonfinite_streak += 1.
// With the defaults the scale starts at 2^16, doubles after 2000 consecutive finite steps and halves on every
// overflow. The scale stays in [kMinScale, kMaxScale]: the floor 2^-24 keeps it (and 1 / scale) finite and non-zero
// however many overflows come in a row (a persistent NaN would otherwise drive it to 0 after ~1100
// halvings, and 1/0 = inf would then poison every update); the ceiling 2^64 keeps it finite.
//
// Disabled (bf16 / f32 training): scale() (and state().scale) is exactly 1 and never changes, even through
// set_state(); good_steps stays 0; but update() still counts skips and the non-finite streak, so the "stop after
// K consecutive non-finite steps" rule works for every precision.
//
// The whole state (scale, good_steps, skipped_total, nonfinite_streak) goes into checkpoints; set_state() after
// a restart continues exactly as the uninterrupted run would.
#pragma once

#include <cstdint>

namespace mt::optim {

struct LossScalerState {
  double scale = 65536.0;
  int64_t good_steps = 0;        // consecutive finite steps since the last growth or backoff
  int64_t skipped_total = 0;     // non-finite (skipped) steps over the whole run
  int64_t nonfinite_streak = 0;  // consecutive non-finite steps up to now
};

class DynamicLossScaler {
 public:
  static constexpr double kMinScale = 5.9604644775390625e-08;  // 2^-24
  static constexpr double kMaxScale = 18446744073709551616.0;  // 2^64

  // Throws mt::Error(Config) unless init_scale is finite and in [kMinScale, kMaxScale], growth_interval >= 1,
  // growth >= 1 and 0 < backoff < 1.
  explicit DynamicLossScaler(double init_scale = 65536.0, int64_t growth_interval = 2000, double growth = 2.0,
                             double backoff = 0.5, bool enabled = true);

  double scale() const { return enabled_ ? state_.scale : 1.0; }  // 1.0 when disabled
  // Record one step's outcome: finite -> maybe grow; non-finite -> back off, count a skip and the streak.
  void update(bool finite);
  LossScalerState state() const { return state_; }
  // Restore a saved state; throws mt::Error(Checkpoint) for a non-finite / out-of-range scale or negative counts.
  void set_state(const LossScalerState& s);
  bool enabled() const { return enabled_; }
  int64_t growth_interval() const { return growth_interval_; }

 private:
  LossScalerState state_;
  int64_t growth_interval_;
  double growth_, backoff_;
  bool enabled_;
};

}  // namespace mt::optim
