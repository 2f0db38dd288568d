#include "model/moe_dispatch.h"

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
  p.token = order.remainder(p.n_tokens);
  const at::Tensor rows = at::arange(flat.numel(), flat.options());
  p.inverse = at::empty_like(order).scatter_(0, order, rows);
  // index_add_ rather than bincount: bincount sizes its output from the data (a device sync).
  p.counts = at::zeros({n_experts}, flat.options()).index_add_(0, flat, at::ones_like(flat));
  if (capacity > 0) {
    const at::Tensor start = p.counts.cumsum(0) - p.counts;  // first row of each expert's slice
    p.kept = (rows - start.index_select(0, sorted_expert)) < capacity;
  }
  return p;
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

}  // namespace sluice
