// What one training step needs in memory, estimated from the config alone (before any tensor
// exists), and what this device or machine has available: the trainer's pre-flight check
// (train.memory_check) refuses a run that cannot fit instead of dying in its first step.
//
// The activation model counts the tensors autograd keeps per token and layer in this code base
// (docs/memory.md walks through it); it matched the measured peak RSS of the 125M config on the
// CPU within a few percent (benchmarks/activation_checkpoint_memory.sh). It is an estimate: the
// allocator's fragmentation and kernels' workspaces come on top.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sluice/config.h"

namespace sluice {

struct StepMemoryLayout {
  int64_t world_size = 1;      // ranks in the job (ZeRO-1 shards the optimizer state over them)
  int64_t expert_parallel = 1; // ranks each MoE layer's experts are split over
  bool cuda = false;           // device memory (runtime: CUDA context, cuBLAS workspaces)
  bool bf16 = false;           // bf16 autocast: 16-bit activations, bf16 copies of the weights
};

struct MemoryEstimate {
  struct Part {
    std::string name;    // "parameters", "activations", ...
    int64_t bytes = 0;
    std::string detail;  // what drives it, with the config keys
  };
  std::vector<Part> parts;
  int64_t total() const;
  int64_t bytes_of(const std::string& name) const;  // 0 when absent
};

MemoryEstimate estimate_step_memory(const Config& cfg, const StepMemoryLayout& layout);

struct AvailableMemory {
  int64_t bytes = -1;  // -1: unknown (the check is skipped)
  std::string source;  // "MemAvailable", "cgroup memory.max", "cudaMemGetInfo on cuda:0", ...
};
// Host memory for one of `local_ranks` processes on this node: the smaller of /proc/meminfo's
// MemAvailable and the cgroup's limit minus its usage, shared out, plus this process's RSS
// (already in use by it, and counted in the estimate's runtime part).
AvailableMemory available_host_memory(int64_t local_ranks);

// "4.31 GiB", "512 MiB".
std::string format_bytes(int64_t bytes);

// The pre-flight report: the breakdown, the available memory, and what each change would bring
// (computed, not guessed: micro_batch 1, activation checkpointing, chunked loss, ZeRO-1).
std::string explain_memory_shortfall(const Config& cfg, const StepMemoryLayout& layout, const MemoryEstimate& est,
                                     const AvailableMemory& avail, const std::string& device);

}  // namespace sluice
