#pragma once
#include <cstdint>

#include "sluice/config.h"

namespace sluice {

// Learning rate for optimizer step `step` (1-based) of `total`: linear warmup to `peak`
// over warmup_steps, then cosine / linear to min_lr_ratio·peak, constant, or WSD
// (stable, then linear decay over the last decay_fraction of all steps).
double learning_rate(const ScheduleConfig& s, double peak, int64_t step, int64_t total);

}  // namespace sluice
