#include "model/self_attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "model/fused_ops.h"

namespace sluice {

namespace nn = torch::nn;

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& cfg)
    : n_heads_(cfg.n_heads), n_kv_heads_(cfg.n_kv_heads), head_dim_(cfg.resolved_head_dim()) {
  const int64_t d = cfg.d_model;
  q_proj = register_module("q_proj", nn::Linear(nn::LinearOptions(d, n_heads_ * head_dim_).bias(false)));
  k_proj = register_module("k_proj", nn::Linear(nn::LinearOptions(d, n_kv_heads_ * head_dim_).bias(false)));
  v_proj = register_module("v_proj", nn::Linear(nn::LinearOptions(d, n_kv_heads_ * head_dim_).bias(false)));
  o_proj = register_module("o_proj", nn::Linear(nn::LinearOptions(n_heads_ * head_dim_, d).bias(false)));
  if (cfg.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, cfg.norm_eps));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, cfg.norm_eps));
  }
  core_ = make_attention_core(cfg.attention.backend);
}

at::Tensor SelfAttentionImpl::forward(const at::Tensor& x, const ForwardContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1);
  // Norm and RoPE act on [B, T, H, D] (the projection's layout); the core takes [B, H, T, D].
  at::Tensor q = q_proj->forward(x).view({B, T, n_heads_, head_dim_});
  at::Tensor k = k_proj->forward(x).view({B, T, n_kv_heads_, head_dim_});
  at::Tensor v = v_proj->forward(x).view({B, T, n_kv_heads_, head_dim_});
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (ctx.rope.defined()) {
    q = apply_rope(q, ctx.rope);
    k = apply_rope(k, ctx.rope);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  v = v.transpose(1, 2);
  const at::Tensor y = core_->forward(q, k, v, ctx.mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)));
  return o_proj->forward(y.transpose(1, 2).reshape({B, T, n_heads_ * head_dim_}));
}

}  // namespace sluice
