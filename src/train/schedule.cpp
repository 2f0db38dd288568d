#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace sluice {

double learning_rate(const ScheduleConfig& s, double peak, int64_t step, int64_t total) {
  if (s.warmup_steps > 0 && step <= s.warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(s.warmup_steps);
  }
  const double min_lr = peak * s.min_lr_ratio;
  if (s.kind == "constant") return peak;
  if (s.kind == "wsd") {
    const int64_t decay_steps = std::max<int64_t>(1, static_cast<int64_t>(std::llround(s.decay_fraction * total)));
    const int64_t decay_start = total - decay_steps;  // last stable step
    if (step <= decay_start) return peak;
    const double t = static_cast<double>(step - decay_start) / static_cast<double>(decay_steps);
    return peak + (min_lr - peak) * std::min(t, 1.0);
  }
  const int64_t span = total - s.warmup_steps;
  const double t = span > 0 ? std::clamp(static_cast<double>(step - s.warmup_steps) / span, 0.0, 1.0) : 1.0;
  if (s.kind == "linear") return peak + (min_lr - peak) * t;
  return min_lr + (peak - min_lr) * 0.5 * (1.0 + std::cos(M_PI * t));  // cosine
}

}  // namespace sluice
