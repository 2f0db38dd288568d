#include "dist/expert_parallel_optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace sluice::dist {

ExpertParallelOptimizer::ExpertParallelOptimizer(std::unique_ptr<Optimizer> dense, std::unique_ptr<AdamW> experts,
                                                 std::shared_ptr<Communicator> ep_group, double expert_grad_scale,
                                                 std::function<at::Tensor(const at::Tensor&)> slice)
    : dense_(std::move(dense)),
      experts_(std::move(experts)),
      ep_group_(std::move(ep_group)),
      expert_grad_scale_(expert_grad_scale),
      slice_(std::move(slice)) {}

at::Tensor ExpertParallelOptimizer::grad_square_sum() {
  at::Tensor experts = experts_->grad_square_sum();
  ep_group_->all_reduce(experts, "summing the experts' gradient norm");
  return dense_->grad_square_sum() + experts.to(at::kFloat);
}

void ExpertParallelOptimizer::scale_grads(const at::Tensor& coef) {
  dense_->scale_grads(coef);
  experts_->scale_grads(coef);
}

at::Tensor ExpertParallelOptimizer::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  experts_->scale_grads(at::full({}, expert_grad_scale_, at::kFloat));  // group sums -> means over all ranks
  const at::Tensor total = grad_square_sum().sqrt();
  if (max_norm > 0) scale_grads(at::clamp_max(max_norm / (total + 1e-6), 1.0));
  return total;
}

void ExpertParallelOptimizer::step(double lr, const at::Tensor& found_inf) {
  dense_->step(lr, found_inf);
  experts_->step(lr, found_inf);
}

void ExpertParallelOptimizer::zero_grad() {
  dense_->zero_grad();
  experts_->zero_grad();
}

NamedTensors ExpertParallelOptimizer::state_tensors() {
  NamedTensors out = dense_->state_tensors();
  for (auto& [name, t] : experts_->state_tensors()) {
    const bool per_element = name.rfind("step.", 0) != 0;  // step.<param> is one scalar
    out.emplace_back(name, per_element ? ep_group_->all_gather(t, "gathering the experts' optimizer state") : t);
  }
  return out;
}

void ExpertParallelOptimizer::load_state_tensors(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::string& file) {
  dense_->load_state_tensors(tensors, file);
  std::map<std::string, at::Tensor> mine;
  for (const auto& [name, t] : experts_->state_tensors()) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) continue;  // AdamW names what is missing
    const bool per_element = name.rfind("step.", 0) != 0;
    mine[name] = per_element && it->second.dim() > 0 ? slice_(it->second) : it->second;
  }
  experts_->load_state_tensors(mine, file);
}

int64_t ExpertParallelOptimizer::state_bytes() const { return dense_->state_bytes() + experts_->state_bytes(); }

}  // namespace sluice::dist
