// The JSON files of a checkpoint (checkpoint.h): trainer_state.json and meta.json, parsed and
// validated without LibTorch so that they can be fuzzed and sanitized on their own (fuzz/).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

constexpr int kCheckpointFormat = 1;

struct TrainingState {
  int64_t step = 0;          // optimizer steps completed
  int64_t tokens = 0;        // tokens consumed
  uint64_t next_batch = 0;   // loader position (index of the next micro-batch on each rank)
  uint64_t global_micro_batch = 0;  // windows per loader index over all ranks (micro_batch x world
                                    // size) when it was saved: positions convert across world sizes
  double interval_loss_sum = 0.0;   // the current log interval's finite-loss sum, and its
  int64_t interval_finite = 0;      // finite and total step counts, so logged means are
  int64_t interval_steps = 0;       // identical across a resume
  // Under data parallelism each rank's own interval sums (index = rank; empty in one process),
  // so a resume on the same world size logs bitwise what the straight run logs. The two
  // fields above then hold their totals.
  std::vector<double> rank_loss_sums;
  std::vector<int64_t> rank_finite_steps;
  int64_t skipped_steps = 0;       // steps dropped for non-finite gradients
};

// Parses the text of trainer_state.json (`path` names it in messages). Every problem (not
// JSON, a missing key, a value of the wrong type or out of range, rank lists of different
// lengths) is an InputError "checkpoint file 'PATH'...".
TrainingState parse_training_state(std::string_view json, const std::string& path);

// Checks the text of meta.json of checkpoint `dir`: a sluice checkpoint of format version
// kCheckpointFormat. Throws InputError otherwise.
void check_checkpoint_meta(std::string_view json, const std::string& dir, const std::string& path);

}  // namespace sluice
