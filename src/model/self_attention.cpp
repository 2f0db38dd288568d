#include "model/self_attention.h"

#include <ATen/ATen.h>

#include "model/activation_checkpoint.h"
#include "model/packed_linear.h"

#include <cmath>
#include <tuple>

namespace sluice {

namespace nn = torch::nn;

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& cfg, int64_t layer)
    : n_heads_(cfg.n_heads),
      n_kv_heads_(cfg.n_kv_heads),
      head_dim_(cfg.resolved_head_dim()),
      layer_(layer),
      window_(cfg.window_for_layer(layer)),
      norm_eps_(cfg.norm_eps),
      fuse_q_proj_(cfg.attention.gate.fuse_q_proj),
      fused_projections_(cfg.fused_projections) {
  const int64_t d = cfg.d_model;
  q_proj = register_module("q_proj", nn::Linear(nn::LinearOptions(d, n_heads_ * head_dim_).bias(false)));
  k_proj = register_module("k_proj", nn::Linear(nn::LinearOptions(d, n_kv_heads_ * head_dim_).bias(false)));
  v_proj = register_module("v_proj", nn::Linear(nn::LinearOptions(d, n_kv_heads_ * head_dim_).bias(false)));
  o_proj = register_module("o_proj", nn::Linear(nn::LinearOptions(n_heads_ * head_dim_, d).bias(false)));
  if (cfg.qk_norm) {
    const bool fused = cfg.elementwise_kernels == "fused";
    q_norm = register_module("q_norm", RMSNorm(head_dim_, cfg.norm_eps, fused));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, cfg.norm_eps, fused));
  }
  if (cfg.attention.output_norm) o_norm = register_module("o_norm", RMSNorm(n_heads_ * head_dim_, cfg.norm_eps));
  gate = Gate(cfg, layer);
  if (gate->has_parameters()) register_module("g_proj", gate.ptr());
  core_ = make_attention_core(cfg.attention.backend);
  positions_ = make_qk_positions(cfg);
  pack_projections();
}

std::vector<at::Tensor> SelfAttentionImpl::packed_group() const {
  std::vector<at::Tensor> group{q_proj->weight};
  if (fused_projections_) {
    group.push_back(k_proj->weight);
    group.push_back(v_proj->weight);
  } else if (!fuse_q_proj_) {
    return {};
  }
  if (gate->weight.defined()) group.push_back(gate->weight);
  return group;
}

void SelfAttentionImpl::pack_projections() {
  const std::vector<at::Tensor> group = packed_group();
  if (group.size() > 1) pack_weights(group);
}

at::Tensor SelfAttentionImpl::project_query(const at::Tensor& x, GateInput& gate_in) {
  if (!fuse_q_proj_ || !gate->weight.defined()) return q_proj->forward(x);
  // One GEMM over [W_q; W_g] (packed): the same products as two, with a single read of x.
  const int64_t nq = n_heads_ * head_dim_;
  const at::Tensor both = packed_linear(x, packed_group());
  gate_in.logits = both.narrow(-1, nq, gate->n_out());
  if (gate->bias.defined()) gate_in.logits = gate_in.logits + gate->bias;
  return both.narrow(-1, 0, nq);
}

at::Tensor SelfAttentionImpl::forward(const at::Tensor& x, const ForwardContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1);
  ForwardObserver* obs = ctx.observer;
  if (obs) obs->on_attention_input(layer_, x);
  GateInput gate_in{x, {}};
  // Norm, gates and positions act on [B, T, heads, D] (the projection's layout); the core takes [B, heads, T, D].
  at::Tensor q, k, v;
  if (fused_projections_) {
    // One GEMM over [W_q; W_k; W_v; W_g] (packed); q, k, v and the gate's logits are column blocks of it.
    const int64_t nq = n_heads_ * head_dim_, nkv = n_kv_heads_ * head_dim_;
    const at::Tensor all = packed_linear(x, packed_group());
    q = all.narrow(-1, 0, nq).reshape({B, T, n_heads_, head_dim_});
    k = all.narrow(-1, nq, nkv).reshape({B, T, n_kv_heads_, head_dim_});
    v = all.narrow(-1, nq + nkv, nkv).reshape({B, T, n_kv_heads_, head_dim_});
    if (gate->weight.defined()) {
      gate_in.logits = all.narrow(-1, nq + 2 * nkv, gate->n_out());
      if (gate->bias.defined()) gate_in.logits = gate_in.logits + gate->bias;
    }
  } else {
    q = project_query(x, gate_in).reshape({B, T, n_heads_, head_dim_});
    k = k_proj->forward(x).view({B, T, n_kv_heads_, head_dim_});
    v = v_proj->forward(x).view({B, T, n_kv_heads_, head_dim_});
  }
  if (!recompute_region_ || obs || ctx.cache) {
    const at::Tensor gated = attention_region(q, k, v, gate_in, ctx);
    return output_projection(gated, gate_in, obs);
  }
  // Selective recompute: the projections' outputs stay, the region between them and o_proj
  // (gates, QK-norm, positions, the core) runs again in backward. The gate's logits are a
  // GEMM output too, so they are computed here, outside the region.
  if (gate->has_parameters() && !gate_in.logits.defined()) gate_in.logits = gate->logits(x);
  const ForwardContext region_ctx = ctx;
  // Not x: a gate with parameters has its logits now, one without reads y only.
  auto region = [this, region_ctx](const std::vector<at::Tensor>& in) {
    const GateInput g{at::Tensor(), in[3]};
    return std::vector<at::Tensor>{attention_region(in[0], in[1], in[2], g, region_ctx)};
  };
  const at::Tensor gated = checkpoint(region, {q, k, v, gate_in.logits})[0];
  return output_projection(gated, gate_in, obs);
}

at::Tensor SelfAttentionImpl::attention_region(at::Tensor q, at::Tensor k, at::Tensor v, const GateInput& gate_in,
                                               const ForwardContext& ctx) {
  ForwardObserver* obs = ctx.observer;
  // G2-G4 act right after the projections, before QK-norm and RoPE.
  q = gate->apply(GateSite::G4, q, gate_in, obs);
  k = gate->apply(GateSite::G3, k, gate_in, obs);
  v = gate->apply(GateSite::G2, v, gate_in, obs);
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  std::tie(q, k) = positions_->apply(q, k, ctx.rope);
  AttentionMask mask = ctx.mask;
  mask.window = window_;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const at::Tensor qc = q.transpose(1, 2);
  at::Tensor kc = k.transpose(1, 2), vc = v.transpose(1, 2);
  if (ctx.cache) std::tie(kc, vc) = ctx.cache->layer(layer_).append(kc, vc);  // the core takes queries as the last T of S
  if (obs) obs->on_attention_core(layer_, qc, kc, vc, mask, scale);
  // The G1 gate inside the core's kernels when it can take it: not with an observer (it sees O
  // before the gate) nor with output_norm (which acts between O and the gate).
  at::Tensor gated;
  if (!obs && !o_norm && gate->fusable_output_gate() && core_->fuses_output_gate(qc, kc, vc, mask)) {
    gated = core_->forward_gated(qc, kc, vc, mask, scale, gate->output_gate_logits(gate_in)).transpose(1, 2);
  } else {
    at::Tensor y = core_->forward(qc, kc, vc, mask, scale).transpose(1, 2);  // [B, T, H, D]
    if (o_norm) {
      // RMS over each head's D values, per-channel weight: the paper's "SDPA GroupNorm".
      y = at::rms_norm(y, {head_dim_}, {}, norm_eps_) * o_norm->weight.view({n_heads_, head_dim_});
    }
    gated = gate->apply(GateSite::G1, y, gate_in, obs);
    if (obs) obs->on_attention_output(layer_, y, gated);
  }
  return gated;
}

at::Tensor SelfAttentionImpl::output_projection(const at::Tensor& gated, const GateInput& gate_in,
                                                ForwardObserver* obs) {
  const int64_t B = gated.size(0), T = gated.size(1);
  const at::Tensor out = o_proj->forward(gated.reshape({B, T, n_heads_ * head_dim_}));
  return gate->apply(GateSite::G5, out, gate_in, obs);
}

}  // namespace sluice
