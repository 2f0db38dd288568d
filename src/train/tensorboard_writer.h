// RUN_DIR/tb/: the scalars of rank 0's metrics records as a TensorBoard event file, beside
// metrics.jsonl (which stays the primary record). One event per record, at the record's step.
//
//   TensorBoardWriter tb(run_dir, resumed_step);  // continues the run's file, cut back to that step
//   tb.write(record);                             // {"step": 120, "loss": 2.31, "moe_load_cv": [..], ...}
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "train/tensorboard_events.h"

namespace sluice {

// The record's numbers as tags: "loss", "val_loss"; per-layer lists "moe_load_cv/layer_3"
// (layer numbers from "moe_layer"), other lists "key/0"; nested objects "key/sub". Not
// "step" (the event's step) and not strings.
std::vector<tb::Scalar> tensorboard_scalars(const nlohmann::json& record);

class TensorBoardWriter {
 public:
  // Opens the run's event file in RUN_DIR/tb/ (the newest, when there are several) after cutting
  // every event file back to events at or before `last_step`: a resumed run would otherwise
  // repeat the steps a killed run logged after its checkpoint. A run that had no event file yet
  // (tensorboard was off) gets the records of RUN_DIR/metrics.jsonl up to `last_step` first.
  TensorBoardWriter(const std::string& run_dir, int64_t last_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event, one write(2); a failed write throws ResourceError naming the file after cutting
  // it back to its last whole event.
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  void append(const tb::Event& event);
  std::string path_;
  int fd_ = -1;
};

// The scalars of a result file of `sluice eval ppl|passkey` or `sluice stats attention`
// ("kind" eval_ppl / eval_passkey / stats_attention), tagged by evaluation and length:
// "eval_ppl/len_512" (with "_stride_64" when strided), "eval_nll/len_512",
// "eval_passkey/len_2048" (accuracy), "stats/sink/mean", "stats/sink/layer_3",
// "stats/gate_mean/layer_3", "stats/residual_max/layer_3", ... Evaluations with --set
// overrides carry them in the tag's first part: "eval_ppl[model.rope.scaling=yarn]/len_4096".
std::vector<tb::Scalar> eval_tensorboard_scalars(const nlohmann::json& result);

// Writes `scalars` as one event at `step` into a new event file in RUN_DIR/tb/eval/, which
// TensorBoard shows as the run's "eval" run; returns its path. A resumed run leaves it alone.
std::string write_eval_event(const std::string& run_dir, int64_t step, const std::vector<tb::Scalar>& scalars);

// Cuts an event file back to its events at or before `last_step` (and to its last whole,
// checksummed record). Returns how many events were dropped.
size_t truncate_event_file(const std::string& path, int64_t last_step);

}  // namespace sluice
