// One optimizer step: forward/backward over the micro-batches (gradient accumulation),
// global-norm clipping, AdamW. Shared by the trainer and the throughput benchmark.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <vector>

#include "data/batch.h"
#include "sluice/model.h"
#include "train/optimizer.h"
#include "train/parallel.h"

namespace sluice {

class TrainStep {
 public:
  // `parallel` (optional) is told of each backward, so data parallelism can average the
  // gradients while the last micro-batch's backward runs.
  TrainStep(CausalLM model, Optimizer& optimizer, double grad_clip, c10::Device device, bool bf16,
            Parallel* parallel = nullptr);

  // fp32 device scalars (no sync), means over the micro-batches.
  struct Result {
    at::Tensor loss;       // language-model cross-entropy (what "loss" means in logs)
    at::Tensor aux_loss;   // MoE load-balancing loss; undefined for dense models
    at::Tensor z_loss;     // MoE router z-loss; undefined for dense models
    at::Tensor grad_norm;  // global gradient norm before clipping
    at::Tensor skipped;    // 1.0 when the gradients were not finite and the update was dropped
  };
  // Backward runs on lm + aux + z (LossParts::total); after AdamW the model's
  // after_optimizer_step() runs (MoE bias update, dropped with a skipped step).
  // `micro_batches` must already be on the device. Batch::segments, when defined, keep attention
  // within documents (data.respect_documents).
  Result run(const std::vector<Batch>& micro_batches, double lr);
  // Mean language-model loss over `batches` without gradients (moved to the device here),
  // with their segments when defined, like run().
  double evaluate(const std::vector<Batch>& batches);
  // The sum of the batches' mean losses (fp32 device scalar), for reducing over ranks.
  at::Tensor evaluate_sum(const std::vector<Batch>& batches);

  // What run() or evaluate_sum() was doing last: "forward pass", "backward pass", "optimizer step",
  // "evaluation" (or "idle"): names the phase of a failure such as running out of memory.
  const char* phase() const { return phase_; }

 private:
  CausalLM model_;
  Optimizer& optimizer_;
  double grad_clip_;
  c10::Device device_;
  bool bf16_;
  Parallel* parallel_;
  const char* phase_ = "idle";
};

}  // namespace sluice
