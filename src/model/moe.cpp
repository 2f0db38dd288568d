#include "model/moe.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "model/moe_dispatch.h"

namespace sluice {

namespace nn = torch::nn;

MoEImpl::MoEImpl(const ModelConfig& cfg)
    : cfg_(cfg.moe), d_model_(cfg.d_model), hidden_(cfg.resolved_expert_hidden()) {
  gate = register_module("gate", Router(cfg.d_model, cfg.moe));
  experts = register_module("experts", Experts(cfg.moe.n_experts, cfg.d_model, hidden_));
  dispatcher_ = std::make_shared<LocalTokenDispatcher>();
  if (cfg.moe.shared_experts > 0) {
    shared_expert = register_module("shared_expert", SwiGLU(cfg.d_model, cfg.resolved_shared_hidden(), cfg.fused_projections));
    if (cfg.moe.shared_expert_gate) {
      shared_expert_gate =
          register_module("shared_expert_gate", nn::Linear(nn::LinearOptions(cfg.d_model, 1).bias(false)));
    }
  }
}

at::Tensor MoEImpl::forward(const at::Tensor& x) {
  const at::Tensor flat = x.reshape({-1, d_model_});
  const int64_t N = flat.size(0), E = cfg_.n_experts, k = cfg_.top_k;

  const Routing r = gate->forward(flat);
  const int64_t capacity =
      cfg_.capacity_factor > 0
          ? expert_capacity(cfg_.capacity_factor, N * dispatcher_->capacity_processes(), k, E)
          : 0;
  DispatchPlan plan = plan_dispatch(r.expert, E, /*capacity=*/0);  // the dispatcher drops
  plan.sequence_length = x.dim() >= 3 ? x.size(-2) : N;
  const at::ScalarType dt = expert_compute_dtype(flat);
  last_gemm_ = choose_expert_gemm(cfg_.gemm, flat.device(), dt, d_model_, hidden_);
  const at::Tensor rows = dispatch(flat.to(dt), plan);  // gather in the compute dtype: half the bytes in bf16
  at::Tensor dropped;
  const at::Tensor out = dispatcher_->run(
      rows, plan, capacity,
      [&](const at::Tensor& local_rows, const at::Tensor& counts) { return experts->forward(local_rows, counts, last_gemm_); },
      dropped);
  at::Tensor y = combine(out, r.weight, plan);
  if (shared_expert) {
    at::Tensor s = shared_expert->forward(flat);
    if (shared_expert_gate) s = s * at::sigmoid(shared_expert_gate->forward(flat));
    y = y + s;
  }

  const bool training = is_training();
  at::Tensor counts = plan.counts;  // assignments per expert the aux loss counts (micro_batch scope)
  int64_t assignments = N * k;
  if (training) {
    at::NoGradGuard no_grad;
    if (!step_counts_.defined() || step_counts_.device() != flat.device()) {
      const auto i64 = plan.counts.options();
      step_counts_ = at::zeros({E}, i64);
      stat_counts_ = at::zeros({E}, i64);
      stat_dropped_ = at::zeros({}, i64);
      stat_entropy_ = at::zeros({}, i64.dtype(at::kDouble));
      step_assignments_ = stat_tokens_ = 0;
    }
    // The counts the balancing terms use: over every process's micro-batch under data
    // parallelism (one small all-reduce per layer), so that W ranks behave like one process.
    const bool counts_matter = cfg_.aux_loss_coef > 0 || cfg_.bias_update_rate > 0;
    if (count_reducer_ && counts_matter) {
      counts = count_reducer_->sum(plan.counts);
      assignments = N * k * count_reducer_->processes();
    }
    step_counts_.add_(counts);
    step_assignments_ += assignments;
    stat_counts_.add_(plan.counts);
    if (dropped.defined()) stat_dropped_.add_(dropped);
    stat_entropy_.add_(at::special_entr(r.probs.detach()).sum());
    stat_tokens_ += N;
  }

  aux_loss_ = z_loss_ = at::Tensor();
  if (cfg_.aux_loss_coef > 0) {
    // f_i: share of the assignments (before dropping) routed to expert i; P_i: mean router
    // probability. Only P_i carries gradient (f_i is a count), as in Switch / GShard.
    const bool global = training && cfg_.aux_loss_scope == "global_batch";
    const at::Tensor f = (global ? step_counts_ : counts).to(at::kFloat) /
                         static_cast<double>(global ? step_assignments_ : assignments);
    aux_loss_ = (f * r.probs.mean(0)).sum() * (cfg_.aux_loss_coef * static_cast<double>(E));
  }
  if (cfg_.z_loss_coef > 0) {
    z_loss_ = at::logsumexp(r.logits, -1).square().mean() * cfg_.z_loss_coef;
  }
  std::vector<int64_t> shape = x.sizes().vec();
  return y.view(shape);
}

void MoEImpl::set_dispatcher(std::shared_ptr<TokenDispatcher> d) {
  dispatcher_ = d ? std::move(d) : std::make_shared<LocalTokenDispatcher>();
}

std::pair<at::Tensor, at::Tensor> MoEImpl::take_losses() {
  std::pair<at::Tensor, at::Tensor> out{std::move(aux_loss_), std::move(z_loss_)};
  aux_loss_ = z_loss_ = at::Tensor();
  return out;
}

void MoEImpl::after_optimizer_step(const at::Tensor& skipped) {
  if (!step_counts_.defined()) return;
  gate->update_bias(step_counts_, skipped);
  step_counts_.zero_();
  step_assignments_ = 0;
}

at::Tensor MoEImpl::take_stats(int64_t& tokens) {
  tokens = stat_tokens_;
  if (!stat_counts_.defined() || stat_tokens_ == 0) return at::Tensor();
  at::Tensor packed = at::cat({stat_counts_.to(at::kDouble), stat_dropped_.to(at::kDouble).view({1}),
                               stat_entropy_.view({1})});
  stat_counts_.zero_();
  stat_dropped_.zero_();
  stat_entropy_.zero_();
  stat_tokens_ = 0;
  return packed;
}

std::vector<MoELayerStats> take_routing_stats(
    const std::vector<std::pair<int64_t, std::shared_ptr<MoEImpl>>>& layers) {
  std::vector<MoELayerStats> out;
  std::vector<at::Tensor> packed;
  std::vector<int64_t> tokens;
  for (const auto& [index, layer] : layers) {
    int64_t n = 0;
    at::Tensor t = layer->take_stats(n);
    if (!t.defined()) continue;
    MoELayerStats s;
    s.layer = index;
    s.tokens = n;
    s.gemm = expert_gemm_name(layer->last_gemm());
    out.push_back(s);
    packed.push_back(t);
  }
  if (out.empty()) return out;
  const at::Tensor host = at::stack(packed).to(at::kCPU);  // the one sync
  for (size_t i = 0; i < out.size(); ++i) {
    const at::Tensor row = host[static_cast<int64_t>(i)];
    const double* v = row.data_ptr<double>();
    const int64_t E = row.numel() - 2;
    MoELayerStats& s = out[i];
    double sum = 0, sq = 0;
    s.load_min = s.load_max = static_cast<int64_t>(v[0]);
    for (int64_t e = 0; e < E; ++e) {
      const auto c = static_cast<int64_t>(v[e]);
      s.expert_tokens.push_back(c);
      s.load_min = std::min(s.load_min, c);
      s.load_max = std::max(s.load_max, c);
      sum += v[e];
      sq += v[e] * v[e];
    }
    const double mean = sum / static_cast<double>(E);
    s.load_cv = mean > 0 ? std::sqrt(std::max(0.0, sq / static_cast<double>(E) - mean * mean)) / mean : 0.0;
    s.dropped = static_cast<int64_t>(v[E]);
    s.router_entropy = v[E + 1] / static_cast<double>(s.tokens);
  }
  return out;
}

}  // namespace sluice
