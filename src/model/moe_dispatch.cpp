#include "model/moe_dispatch.h"

#include "model/token_dispatcher.h"

#include <ATen/ATen.h>

#include <cmath>

namespace sluice {

int64_t expert_capacity(double factor, int64_t n_tokens, int64_t top_k, int64_t n_experts) {
  return static_cast<int64_t>(
      std::ceil(factor * static_cast<double>(n_tokens * top_k) / static_cast<double>(n_experts)));
}

DispatchPlan plan_dispatch(const at::Tensor& expert, int64_t n_experts, int64_t capacity) {
  DispatchPlan p;
  p.n_tokens = expert.size(0);
  p.top_k = expert.size(1);
  p.n_experts = n_experts;
  const at::Tensor flat = expert.t().reshape({-1});  // slot-major
  const auto [sorted_expert, order] = at::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  p.order = order;
  p.expert = sorted_expert;
  p.token = order.remainder(p.n_tokens);
  const at::Tensor rows = at::arange(flat.numel(), flat.options());
  p.inverse = at::empty_like(order).scatter_(0, order, rows);
  // index_add_ rather than bincount: bincount sizes its output from the data (a device sync).
  p.counts = at::zeros({n_experts}, flat.options()).index_add_(0, flat, at::ones_like(flat));
  if (capacity > 0) p.kept = capacity_mask(sorted_expert, p.counts, capacity);
  return p;
}

at::Tensor capacity_mask(const at::Tensor& row_expert, const at::Tensor& counts, int64_t capacity) {
  const at::Tensor rows = at::arange(row_expert.numel(), row_expert.options());
  const at::Tensor start = counts.cumsum(0) - counts;  // first row of each expert's slice
  return (rows - start.index_select(0, row_expert)) < capacity;
}

at::Tensor dispatch(const at::Tensor& x, const DispatchPlan& plan) {
  const at::Tensor rows = x.index_select(0, plan.token);
  if (!plan.kept.defined()) return rows;
  return at::where(plan.kept.unsqueeze(1), rows, at::zeros({}, rows.options()));
}

at::Tensor combine(const at::Tensor& rows, const at::Tensor& weight, const DispatchPlan& plan) {
  const at::Tensor per_slot = rows.index_select(0, plan.inverse).view({plan.top_k, plan.n_tokens, rows.size(1)});
  return (per_slot * weight.t().unsqueeze(-1)).sum(0);
}

at::Tensor LocalTokenDispatcher::run(const at::Tensor& rows, const DispatchPlan& plan, int64_t capacity,
                                     const ExpertFn& experts, at::Tensor& dropped) {
  if (capacity <= 0) return experts(rows, plan.counts);
  const at::Tensor kept = capacity_mask(plan.expert, plan.counts, capacity);
  dropped = kept.logical_not().sum();
  return experts(at::where(kept.unsqueeze(1), rows, at::zeros({}, rows.options())), plan.counts);
}

}  // namespace sluice
