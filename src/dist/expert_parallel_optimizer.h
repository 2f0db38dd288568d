// The optimizer under expert parallelism: one for the replicated (dense) parameters, AdamW
// or ZeRO-1's ShardedAdamW over all ranks, and an AdamW for this rank's experts. Gradient
// clipping uses the true global norm (every parameter counted once: the dense part once, each
// expert from the rank of its expert-parallel group that holds it), and checkpoints hold the
// whole state under the single-process names.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "train/adamw.h"
#include "train/optimizer.h"

namespace sluice::dist {

class ExpertParallelOptimizer : public Optimizer {
 public:
  // `experts`' gradients arrive as the sum over the expert-parallel group's tokens averaged
  // over the replicas (the expert reducer), i.e. group-size times the mean over all ranks:
  // `expert_grad_scale` (1 / group size) makes them that mean. `ep_group` sums the experts'
  // norms; `slice` maps an expert parameter's whole tensor to this rank's part.
  ExpertParallelOptimizer(std::unique_ptr<Optimizer> dense, std::unique_ptr<AdamW> experts,
                          std::shared_ptr<Communicator> ep_group, double expert_grad_scale,
                          std::function<at::Tensor(const at::Tensor&)> slice);

  at::Tensor clip_grad_norm(double max_norm) override;
  at::Tensor grad_square_sum() override;
  void scale_grads(const at::Tensor& coef) override;
  void step(double lr, const at::Tensor& found_inf = {}) override;
  void zero_grad() override;
  NamedTensors state_tensors() override;  // a collective over the group (and all ranks under ZeRO-1)
  void load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) override;
  int64_t state_bytes() const override;

 private:
  std::unique_ptr<Optimizer> dense_;
  std::unique_ptr<AdamW> experts_;
  std::shared_ptr<Communicator> ep_group_;
  double expert_grad_scale_;
  std::function<at::Tensor(const at::Tensor&)> slice_;
};

}  // namespace sluice::dist
