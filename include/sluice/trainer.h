// `sluice train`: runs a validated configuration end to end.
#pragma once
#include <string>
#include <vector>

#include "sluice/config.h"

namespace sluice {

struct TrainOptions {
  std::string run_dir;  // empty: run.dir/<run.name>-<UTC timestamp>
};

struct TrainSummary {
  std::string run_dir;
  int64_t steps = 0;
  double final_loss = 0.0;      // mean train loss of the last log interval
  double final_val_loss = 0.0;  // NaN when no validation ran
  double tokens_per_s = 0.0;    // over the whole run
  std::vector<double> logged_losses;  // one per log interval (log_every: 1 gives every step)
};

// Resolves the device, loads data and builds the model before touching the disk: bad input
// throws InputError and creates nothing. Then creates the run directory (config.yaml,
// metrics.jsonl, train.log, summary.json) and trains.
TrainSummary train(const LoadedConfig& cfg, const TrainOptions& opts);

}  // namespace sluice
