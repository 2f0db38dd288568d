#include "dist/expert_parallel.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "dist/alltoall_dispatcher.h"
#include "dist/expert_parallel_optimizer.h"
#include "dist/sharded_adamw.h"
#include "sluice/log.h"
#include "train/adamw.h"

namespace sluice::dist {

ExpertParallel::ExpertParallel(std::shared_ptr<Communicator> comm, const Config& cfg, c10::Device device)
    : DataParallel(std::move(comm), cfg, device),
      ep_(cfg.parallel.expert_parallel),
      n_experts_(cfg.model.moe.n_experts),
      per_rank_(cfg.model.moe.n_experts / cfg.parallel.expert_parallel) {
  const int64_t W = world_size(), r = rank(), g = r / ep_, i = r % ep_;
  // Groups are created in the same order on every rank: all expert-parallel groups, then all
  // replica groups; each rank joins the ones it belongs to.
  for (int64_t k = 0; k < W / ep_; ++k) {
    if (k != g) continue;
    std::vector<int64_t> members;
    for (int64_t j = 0; j < ep_; ++j) members.push_back(k * ep_ + j);
    group_ = comm_->subgroup(members, fmt::format("ep{}", k));
  }
  if (W > ep_) {
    std::vector<int64_t> members;
    for (int64_t k = 0; k < W / ep_; ++k) members.push_back(k * ep_ + i);
    replicas_ = comm_->subgroup(members, fmt::format("experts{}", i));
  }
}

ExpertParallel::~ExpertParallel() = default;

bool ExpertParallel::is_expert(const std::string& name) { return name.find(".mlp.experts.") != std::string::npos; }

std::string ExpertParallel::describe() const {
  const int64_t first = (rank() % ep_) * per_rank_;
  return fmt::format("{}; expert parallel: {} group(s) of {} rank(s), this rank holds experts {}..{} of {}",
                     DataParallel::describe(), world_size() / ep_, ep_, first, first + per_rank_ - 1, n_experts_);
}

void ExpertParallel::shard_model(CausalLMImpl& model) {
  model.keep_experts((rank() % ep_) * per_rank_, per_rank_);
  model.set_token_dispatcher(std::make_shared<AllToAllDispatcher>(group_));
}

NamedTensors ExpertParallel::whole_model_tensors(CausalLMImpl& model) {
  NamedTensors out = Parallel::whole_model_tensors(model);
  for (auto& [name, t] : out)
    if (is_expert(name)) t = group_->all_gather(t.detach(), "gathering the experts for a checkpoint");
  return out;
}

at::Tensor ExpertParallel::local_part(const std::string& name, const at::Tensor& whole) const {
  // A tensor of another shape is passed on whole, for the loader to report.
  if (!is_expert(name) || whole.dim() == 0 || whole.size(0) != n_experts_) return whole;
  return whole.narrow(0, (rank() % ep_) * per_rank_, per_rank_);
}

int64_t ExpertParallel::parameter_count(const CausalLMImpl& model) const {
  int64_t n = 0;
  for (const auto& p : model.named_parameters()) n += p.value().numel() * (is_expert(p.key()) ? ep_ : 1);
  return n;
}

int64_t ExpertParallel::reference_rank(const std::string& name, int64_t rank) const {
  return is_expert(name) ? rank % ep_ : 0;
}

std::unique_ptr<Optimizer> ExpertParallel::make_optimizer(CausalLMImpl& model,
                                                          const std::vector<std::pair<std::string, at::Tensor>>& params,
                                                          const Config& cfg) {
  NamedTensors dense, experts;
  for (const auto& p : params) (is_expert(p.first) ? experts : dense).push_back(p);
  // The first rank's weights everywhere: dense ones from rank 0, experts from the first of
  // their replicas (every rank initialised the whole model from the same seed anyway).
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> shared, own;
    for (const auto& p : model.named_parameters()) (is_expert(p.key()) ? own : shared).push_back(p.value().detach());
    for (const auto& b : model.buffers()) shared.push_back(b);
    comm_->broadcast(shared, "broadcasting rank 0's initial parameters");
    if (replicas_) replicas_->broadcast(own, "broadcasting the experts' initial parameters");
  }
  std::vector<std::vector<size_t>> buckets, expert_buckets;
  reducer_ = make_reducer(dense, comm_, buckets);
  if (replicas_) expert_reducer_ = make_reducer(experts, replicas_, expert_buckets);
  std::unique_ptr<Optimizer> dense_opt;
  if (cfg.parallel.zero == 1) {
    auto sharded = std::make_unique<ShardedAdamW>(dense, buckets, cfg.optim, *comm_);
    reducer_->register_comm_hook(sharded->make_comm_hook());
    dense_opt = std::move(sharded);
  } else {
    dense_opt = std::make_unique<AdamW>(dense, cfg.optim);
  }
  const int64_t first = (rank() % ep_) * per_rank_, count = per_rank_, E = n_experts_;
  return std::make_unique<ExpertParallelOptimizer>(
      std::move(dense_opt), std::make_unique<AdamW>(experts, cfg.optim), group_, 1.0 / static_cast<double>(ep_),
      [first, count, E](const at::Tensor& whole) {
        return whole.dim() > 0 && whole.size(0) == E ? whole.narrow(0, first, count) : whole;
      });
}


void ExpertParallel::before_backward(const at::Tensor& loss, bool last_micro_batch) {
  DataParallel::before_backward(loss, last_micro_batch);
  if (last_micro_batch && expert_reducer_) {
    comm_->guarded("preparing the experts' gradient reduction", [&] { expert_reducer_->prepare_for_backward({loss}); });
  }
}

std::vector<std::pair<std::string, double>> ExpertParallel::interval_metrics(int64_t steps, double seconds) {
  const AllToAllDispatcher::Traffic t = AllToAllDispatcher::take_traffic();
  if (steps <= 0 || seconds <= 0) return {};
  return {{"ep_alltoall_mb_per_step", static_cast<double>(t.bytes_sent) / 1e6 / static_cast<double>(steps)},
          {"ep_alltoall_share", t.seconds / seconds}};
}

}  // namespace sluice::dist
