// `sluice train`: runs a validated configuration end to end.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "sluice/config.h"

namespace sluice {

class Parallel;  // src/train/parallel.h; src/dist/ makes the distributed one

struct TrainOptions {
  std::string run_dir;          // empty: run.dir/<run.name>-<UTC timestamp>
  std::string resume = "auto";  // auto: continue the run directory's latest checkpoint if it has
                                // one; never: refuse an existing run; else a checkpoint or run dir
  int64_t stop_after = 0;       // > 0: stop after this step with a checkpoint, as on SIGTERM
  std::string init_from;        // a checkpoint or run dir (e.g. `sluice import hf`'s): a new run starts
                                // from its weights (step 0, fresh optimizer); a resume ignores it
  std::shared_ptr<Parallel> parallel;  // the ranks of a distributed run (dist::connect); null: one process
};

struct TrainSummary {
  std::string run_dir;
  int64_t steps = 0;
  double final_loss = 0.0;      // mean train loss of the last log interval
  double final_val_loss = 0.0;  // NaN when no validation ran
  double tokens_per_s = 0.0;    // over the whole run, all ranks together
  std::vector<double> logged_losses;  // one per log interval in this process (log_every: 1 gives every step)
  int64_t resumed_from_step = 0;      // 0: a fresh start
  bool stopped_by_signal = false;  // or by stop_after
  std::string last_checkpoint;
};

// Resolves the device, opens the data, builds the model and loads any checkpoint before
// touching the disk: bad input throws InputError and creates nothing. Then creates (or, when
// resuming, continues) the run directory (config.yaml, metrics.jsonl, train.log,
// checkpoints/, summary.json) and trains. SIGTERM/SIGINT stop after the current step with a
// checkpoint. With `opts.parallel`, every rank calls this; rank 0 writes the run directory's
// files and checkpoints, every rank its RUN_DIR/logs/rank-R.log, and what is logged is the
// global batch's (docs/distributed.md).
TrainSummary train(const LoadedConfig& cfg, const TrainOptions& opts);

}  // namespace sluice
