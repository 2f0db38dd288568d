// How an MoE layer's routed token copies reach the experts and come back (Megatron-Core's
// token dispatcher). The layer routes, sorts the copies by expert (moe_dispatch.h) and hands
// them here; a dispatcher runs the experts this process holds on their rows and returns every
// copy's output in the layer's order, which the layer combines. LocalTokenDispatcher (all
// experts in this process) is the default; expert parallelism plugs in an all-to-all one from
// src/dist/ (CausalLMImpl::set_token_dispatcher), so the layer never sees a process group.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>

#include "model/moe_dispatch.h"

namespace sluice {

class TokenDispatcher {
 public:
  // rows [M, d] sorted by local expert, counts [E_local] int64 -> outputs [M, d].
  using ExpertFn = std::function<at::Tensor(const at::Tensor& rows, const at::Tensor& counts)>;
  virtual ~TokenDispatcher() = default;

  // `rows` [N·k, d]: every token once per selected expert, in `plan`'s expert-sorted order.
  // Runs `experts` on the rows of the experts held here and returns each row's output in the
  // order of `rows`. With `capacity` > 0 an expert keeps its first `capacity` rows in the
  // priority order of docs/moe.md (over all tokens_per_capacity() processes' tokens); dropped
  // rows get zero outputs and `dropped` (an int64 device scalar) counts those this process's
  // experts dropped.
  virtual at::Tensor run(const at::Tensor& rows, const DispatchPlan& plan, int64_t capacity, const ExpertFn& experts,
                         at::Tensor& dropped) = 0;
  // How many processes' micro-batches one expert's capacity is counted over.
  virtual int64_t capacity_processes() const = 0;
};

// Every expert in this process: the rows go to the experts as they are.
class LocalTokenDispatcher : public TokenDispatcher {
 public:
  at::Tensor run(const at::Tensor& rows, const DispatchPlan& plan, int64_t capacity, const ExpertFn& experts,
                 at::Tensor& dropped) override;
  int64_t capacity_processes() const override { return 1; }
};

}  // namespace sluice
