// Checkpoints: RUN_DIR/checkpoints/step-NNNNNNNN/ holding
//   model.safetensors (sharded above checkpoint.max_shard_mb, HF index layout), HF tensor names
//   optimizer.safetensors  AdamW state: exp_avg.<param>, exp_avg_sq.<param>, step.<param>
//   rng.safetensors        CPU (and CUDA) generator states
//   trainer_state.json     step, tokens, loader position, log-interval accumulators
//   config.yaml            the resolved config of the run that wrote it
//   meta.json              format version, sluice and torch versions (written last)
// and RUN_DIR/checkpoints/latest naming the newest. Writes go to a hidden temporary
// directory that is fsynced and renamed, then `latest` is replaced, then old checkpoints are
// deleted: a process killed at any moment leaves the previous checkpoint loadable.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sluice/config.h"
#include "sluice/model.h"
#include "train/adamw.h"
#include "train/checkpoint_meta.h"

namespace sluice {

// kCheckpointFormat and TrainingState: train/checkpoint_meta.h (torch-free).

// Writes a checkpoint of the current state; returns its directory. `optimizer_state` is
// Optimizer::state_tensors() (a collective under ZeRO-1, so the trainer gathers it on every
// rank and rank 0 writes).
std::string save_checkpoint(const std::string& run_dir, const Config& cfg, CausalLMImpl& model,
                            const NamedTensors& optimizer_state, const TrainingState& state);
std::string save_checkpoint(const std::string& run_dir, const Config& cfg, CausalLMImpl& model, Optimizer& opt,
                            const TrainingState& state);
// The same with the model's tensors given whole by name (Parallel::whole_model_tensors).
std::string save_checkpoint(const std::string& run_dir, const Config& cfg, const NamedTensors& model_tensors,
                            const NamedTensors& optimizer_state, const TrainingState& state);
// Where save_checkpoint puts the checkpoint of `step`: RUN_DIR/checkpoints/step-NNNNNNNN.
std::string checkpoint_dir(const std::string& run_dir, int64_t step);
// Deletes all but the newest `keep` complete checkpoints (and stale temporary directories).
void prune_checkpoints(const std::string& run_dir, int64_t keep);

// The newest complete checkpoint of a run directory (`latest`, else the highest step with a
// meta.json), if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);
// A checkpoint directory, or a run directory meaning its latest checkpoint.
std::string resolve_checkpoint(const std::string& path);

struct CheckpointInfo {
  std::string dir;
  Config config;
  TrainingState state;
};
// Reads meta.json (refusing other format versions), config.yaml and trainer_state.json.
CheckpointInfo read_checkpoint_info(const std::string& dir);
// Loads weights (names, shapes and dtypes must match exactly), optimizer state and RNG.
// Throws InputError naming the file and tensor on any mismatch or corruption.
// `part` maps a whole tensor of the file to what this process holds of it (expert
// parallelism's Parallel::local_part); by default the whole tensor.
using TensorPart = std::function<at::Tensor(const std::string& name, const at::Tensor& whole)>;
void load_checkpoint(const std::string& dir, CausalLMImpl& model, Optimizer* opt, bool restore_rng,
                     const TensorPart& part = {});

// Keys whose change makes a checkpoint unusable for this config (model shapes, tokenizer,
// data order), and keys that changed harmlessly; both as "key: old -> new".
struct ConfigDiff {
  std::vector<std::string> incompatible, harmless;
};
ConfigDiff diff_for_resume(const Config& checkpoint, const Config& current);

}  // namespace sluice
