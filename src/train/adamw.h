// AdamW with decoupled weight decay (Loshchilov & Hutter 2019), run by ATen's fused
// multi-tensor kernel (`_fused_adamw_`, CPU and CUDA). State is explicit so checkpoints
// can save it by parameter name.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "sluice/config.h"
#include "train/optimizer.h"

namespace sluice {

struct AdamWState {
  std::string name;
  at::Tensor param, exp_avg, exp_avg_sq, step;  // step: fp32 scalar on the param's device
};

struct AdamWGroup {
  double weight_decay = 0.0;
  std::vector<AdamWState> params;
};

// Which parameters get no weight decay: "norm" (RMSNorm weights), "bias", "embedding".
bool excluded_from_decay(const std::string& name, const std::vector<std::string>& no_decay);

class AdamW : public Optimizer {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, const OptimConfig& cfg);
  at::Tensor clip_grad_norm(double max_norm) override;
  at::Tensor grad_square_sum() override;
  void scale_grads(const at::Tensor& coef) override;
  // Parameters without a gradient are left alone. When `found_inf` (a device scalar) is
  // non-zero the update is skipped entirely, on the device, without a host sync.
  void step(double lr, const at::Tensor& found_inf = {}) override;
  void zero_grad() override;
  NamedTensors state_tensors() override;
  void load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) override;
  int64_t state_bytes() const override;
  const std::vector<AdamWGroup>& groups() const { return groups_; }
  std::vector<AdamWGroup>& groups() { return groups_; }  // checkpoint loading
  std::vector<at::Tensor> params() const;

 private:
  OptimConfig cfg_;
  std::vector<AdamWGroup> groups_;  // [0]: decayed, [1]: not decayed
};

}  // namespace sluice
