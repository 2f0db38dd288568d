// The Mixture-of-Experts feed-forward layer (model.arch: moe): route -> dispatch (tokens
// sorted by expert) -> experts on contiguous slices -> combine with the routing weights,
// plus optional shared experts. Formulas, losses and the dropping policy: docs/moe.md.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <vector>

#include "model/experts.h"
#include "model/router.h"
#include "model/swiglu.h"
#include "model/token_dispatcher.h"
#include "sluice/config.h"
#include "sluice/model.h"

namespace sluice {

class MoEImpl : public torch::nn::Module {
 public:
  explicit MoEImpl(const ModelConfig& cfg);
  // x [..., d_model] -> [..., d_model] (fp32 under autocast: the combine sums in fp32).
  at::Tensor forward(const at::Tensor& x);

  // α·E·Σ f_i·P_i and β·mean(logsumexp²) of the last forward (undefined when the coefficient
  // is 0); cleared by the call so no graph outlives its step.
  std::pair<at::Tensor, at::Tensor> take_losses();
  // After each optimizer step: the aux-loss-free bias update from the step's expert load
  // (not where `skipped`, a device scalar, is 1: a dropped step), then the per-step counts
  // restart (they also feed aux_loss_scope global_batch).
  void after_optimizer_step(const at::Tensor& skipped = {});
  // Routing statistics accumulated on the device over training forwards since the last call:
  // [E + 2] fp64 = tokens per expert, dropped assignments, summed router entropy; `tokens`
  // gets the number of tokens routed. Resets the accumulators. Undefined if nothing was routed.
  at::Tensor take_stats(int64_t& tokens);
  // Training forwards count expert assignments through `reducer` (CausalLMImpl::set_routing_count_reducer).
  void set_count_reducer(std::shared_ptr<RoutingCountReducer> reducer) { count_reducer_ = std::move(reducer); }
  // Where the routed copies go (null: back to the local dispatcher); CausalLMImpl::set_token_dispatcher.
  void set_dispatcher(std::shared_ptr<TokenDispatcher> d);
  // The expert-GEMM path the last forward used.
  ExpertGemm last_gemm() const { return last_gemm_; }

  Router gate{nullptr};
  Experts experts{nullptr};
  SwiGLU shared_expert{nullptr};                     // null without shared experts
  torch::nn::Linear shared_expert_gate{nullptr};     // null unless moe.shared_expert_gate

 private:
  MoEConfig cfg_;
  int64_t d_model_, hidden_;
  at::Tensor aux_loss_, z_loss_;
  ExpertGemm last_gemm_ = ExpertGemm::Loop;
  std::shared_ptr<RoutingCountReducer> count_reducer_;
  std::shared_ptr<TokenDispatcher> dispatcher_;
  // Accumulators, allocated on the device of the first training forward.
  at::Tensor step_counts_;  // [E] int64 since the last optimizer step
  int64_t step_assignments_ = 0;
  at::Tensor stat_counts_, stat_dropped_, stat_entropy_;  // [E] int64, [] int64, [] fp64
  int64_t stat_tokens_ = 0;
};
TORCH_MODULE(MoE);

// One device sync for all layers: the statistics of `layers` (block index, MoE layer).
std::vector<MoELayerStats> take_routing_stats(const std::vector<std::pair<int64_t, std::shared_ptr<MoEImpl>>>& layers);

}  // namespace sluice
