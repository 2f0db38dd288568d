// A checkpoint's JSON files (src/train/checkpoint_meta.*): the input is read both as
// trainer_state.json and as meta.json. Properties: only InputError escapes; an accepted
// state has non-negative counters and rank lists of equal length.
#include <cstdint>

#include "fuzz_util.h"
#include "sluice/errors.h"
#include "train/checkpoint_meta.h"

using namespace sluice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  try {
    const TrainingState s = parse_training_state(text, "fuzz/trainer_state.json");
    fuzz::check(s.step >= 0 && s.tokens >= 0 && s.interval_finite >= 0 && s.interval_steps >= 0 && s.skipped_steps >= 0,
                "negative counter accepted");
    fuzz::check(s.rank_loss_sums.size() == s.rank_finite_steps.size(), "rank lists of different lengths accepted");
  } catch (const InputError&) {
  }
  try {
    check_checkpoint_meta(text, "fuzz", "fuzz/meta.json");
  } catch (const InputError&) {
  }
  return 0;
}
