#include "train/train_step.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include "train/device.h"

namespace sluice {

TrainStep::TrainStep(CausalLM model, Optimizer& optimizer, double grad_clip, c10::Device device, bool bf16,
                     Parallel* parallel)
    : model_(std::move(model)),
      optimizer_(optimizer),
      grad_clip_(grad_clip),
      device_(device),
      bf16_(bf16),
      parallel_(parallel) {}

TrainStep::Result TrainStep::run(const std::vector<Batch>& micro_batches, double lr) {
  model_->train();
  const double inv = 1.0 / static_cast<double>(micro_batches.size());
  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  Result r;
  r.loss = at::zeros({}, fp32);
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const Batch& b = micro_batches[i];
    LossParts loss;
    phase_ = "forward pass";
    {
      AutocastScope autocast(device_, bf16_);
      loss = model_->loss_parts(b.inputs, b.targets, b.segments);
    }
    const at::Tensor scaled = loss.total * inv;
    phase_ = "backward pass";
    if (parallel_) parallel_->before_backward(scaled, i + 1 == micro_batches.size());
    scaled.backward();
    r.loss.add_(loss.lm.detach(), inv);
    if (loss.aux.defined()) {
      if (!r.aux_loss.defined()) {
        r.aux_loss = at::zeros({}, fp32);
        r.z_loss = at::zeros({}, fp32);
      }
      r.aux_loss.add_(loss.aux.detach(), inv);
      r.z_loss.add_(loss.z.detach(), inv);
    }
  }
  phase_ = "optimizer step";
  r.grad_norm = optimizer_.clip_grad_norm(grad_clip_);
  // A non-finite norm means some gradient is inf/NaN: the fused AdamW skips the update on
  // the device (no host sync); the trainer decides at its next sync whether to go on.
  r.skipped = r.grad_norm.isfinite().logical_not().to(at::kFloat);
  optimizer_.step(lr, r.skipped);
  optimizer_.zero_grad();
  model_->after_optimizer_step(r.skipped);
  phase_ = "idle";
  return r;
}

double TrainStep::evaluate(const std::vector<Batch>& batches) {
  return evaluate_sum(batches).item<double>() / static_cast<double>(batches.size());
}

at::Tensor TrainStep::evaluate_sum(const std::vector<Batch>& batches) {
  at::NoGradGuard no_grad;
  phase_ = "evaluation";
  model_->eval();
  at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (const Batch& b : batches) {
    const Batch d = to_device(b, device_);
    AutocastScope autocast(device_, bf16_);
    total.add_(model_->loss_parts(d.inputs, d.targets, d.segments).lm);
  }
  model_->train();
  phase_ = "idle";
  return total;
}

}  // namespace sluice
