// Expert parallelism (parallel.expert_parallel: E) combined with data parallelism: the world's
// W ranks form W/E expert-parallel groups of E consecutive ranks. Inside a group, rank i holds
// experts [i·n/E, (i+1)·n/E) of every MoE layer and the routed tokens travel between the
// group's ranks through AllToAllDispatcher; the ranks at the same position i of different
// groups hold the same experts (their "replicas"). Everything else (attention, norms,
// embeddings, routers, shared experts) is replicated on every rank, as in DataParallel.
// Gradients: dense ones averaged over all W ranks, experts' over their replicas only, then
// scaled to the mean over all W ranks. docs/distributed.md ("Expert parallelism").
#pragma once
#include "dist/data_parallel.h"

namespace sluice::dist {

class ExpertParallel : public DataParallel {
 public:
  // Creates the two kinds of subgroups (every rank takes part); `cfg` was checked (n_experts
  // divisible by E, W divisible by E).
  ExpertParallel(std::shared_ptr<Communicator> comm, const Config& cfg, c10::Device device);
  ~ExpertParallel() override;

  std::string describe() const override;
  void shard_model(CausalLMImpl& model) override;
  NamedTensors whole_model_tensors(CausalLMImpl& model) override;
  at::Tensor local_part(const std::string& name, const at::Tensor& whole) const override;
  int64_t parameter_count(const CausalLMImpl& model) const override;
  std::unique_ptr<Optimizer> make_optimizer(CausalLMImpl& model,
                                            const std::vector<std::pair<std::string, at::Tensor>>& params,
                                            const Config& cfg) override;
  void before_backward(const at::Tensor& loss, bool last_micro_batch) override;
  // ep_alltoall_mb_per_step (this rank's bytes sent to the other members of its group, all
  // MoE layers, forward and backward) and ep_alltoall_share (of the interval's wall time).
  std::vector<std::pair<std::string, double>> interval_metrics(int64_t steps, double seconds) override;

  // Stacked expert parameters and their optimizer state: model.layers.{i}.mlp.experts.*
  static bool is_expert(const std::string& name);

 protected:
  int64_t reference_rank(const std::string& name, int64_t rank) const override;

 private:
  int64_t ep_;             // ranks per expert-parallel group
  int64_t n_experts_, per_rank_;
  std::shared_ptr<Communicator> group_;     // this rank's expert-parallel group
  std::shared_ptr<Communicator> replicas_;  // the ranks holding this rank's experts (null if only this one)
  std::shared_ptr<c10d::Reducer> expert_reducer_;
};

}  // namespace sluice::dist
