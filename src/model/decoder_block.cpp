#include "model/decoder_block.h"

#include "sluice/forward_observer.h"

namespace sluice {

DecoderBlockImpl::DecoderBlockImpl(const ModelConfig& cfg, int64_t layer)
    : layer_(layer), fused_elementwise_(cfg.elementwise_kernels == "fused") {
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.d_model, cfg.norm_eps, fused_elementwise_));
  self_attn = register_module("self_attn", SelfAttention(cfg, layer));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(cfg.d_model, cfg.norm_eps, fused_elementwise_));
  if (cfg.is_moe_layer(layer)) {
    moe_mlp = register_module("mlp", MoE(cfg));
  } else {
    mlp = register_module("mlp", SwiGLU(cfg.d_model, cfg.resolved_ffn_hidden(), cfg.fused_projections));
  }
}

void DecoderBlockImpl::set_activation_checkpointing(ActivationCheckpointing mode) {
  checkpointing_ = mode;
  const bool selective = mode == ActivationCheckpointing::Selective;
  self_attn->set_recompute_region(selective);
  if (mlp) mlp->set_recompute_product(selective);
  if (moe_mlp && moe_mlp->shared_expert) moe_mlp->shared_expert->set_recompute_product(selective);
}

at::Tensor DecoderBlockImpl::attention_output(const at::Tensor& x, const ForwardContext& ctx) {
  return self_attn->forward(input_layernorm->forward(x), ctx);
}

std::pair<at::Tensor, at::Tensor> DecoderBlockImpl::residual_and_norm(const at::Tensor& x, const at::Tensor& attn) {
  if (fused_elementwise_) return post_attention_layernorm->forward_with_residual(x, attn);
  const at::Tensor h = x + attn;
  return {h, post_attention_layernorm->forward(h)};
}

at::Tensor DecoderBlockImpl::feed_forward(const at::Tensor& n) { return mlp ? mlp->forward(n) : moe_mlp->forward(n); }

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, const ForwardContext& ctx) {
  if (ctx.observer) {
    const at::Tensor attn = attention_output(x, ctx);
    const auto [h, n] = residual_and_norm(x, attn);
    const at::Tensor ffn = feed_forward(n);
    const at::Tensor out = h + ffn;
    ctx.observer->on_block_output(layer_, attn, ffn, out);
    return out;
  }
  if (checkpointing_ == ActivationCheckpointing::Selective && !ctx.cache) {
    // The norms' outputs are read only by the GEMMs after them: recomputed, not kept (so the
    // second norm reads h, not the residual form's pair).
    auto norm = [](const RMSNorm& n) {
      return [n](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{n->forward(in[0])}; };
    };
    const at::Tensor h = x + with_recomputed_input(norm(input_layernorm), {x},
                                                   [&](const at::Tensor& n) { return self_attn->forward(n, ctx); });
    return h + with_recomputed_input(norm(post_attention_layernorm), {h},
                                     [&](const at::Tensor& n) { return feed_forward(n); });
  }
  if (checkpointing_ != ActivationCheckpointing::Full || ctx.cache) {
    const auto [h, n] = residual_and_norm(x, attention_output(x, ctx));
    return h + feed_forward(n);
  }
  const ForwardContext region_ctx = ctx;
  if (mlp) {
    auto block = [this, region_ctx](const std::vector<at::Tensor>& in) {
      const auto [h, n] = residual_and_norm(in[0], attention_output(in[0], region_ctx));
      return std::vector<at::Tensor>{h + mlp->forward(n)};
    };
    return checkpoint(block, {x})[0];
  }
  // MoE: the attention half is recomputed, the MoE layer runs outside the region. With fused
  // kernels the region ends with the residual form and returns both h and norm(h).
  // The residual add stays inside the region for bitwise equality with `none`: x's gradient
  // sums three terms (the residual's and input_layernorm's two uses of x), in the order they
  // reach x. With the add outside, the region would sum its two first: another association,
  // a few ulps off in every gradient upstream of this block (3e-7 relative, tried).
  auto half = [this, region_ctx](const std::vector<at::Tensor>& in) {
    const at::Tensor attn = attention_output(in[0], region_ctx);
    if (!fused_elementwise_) return std::vector<at::Tensor>{in[0] + attn};
    const auto [h, n] = residual_and_norm(in[0], attn);
    return std::vector<at::Tensor>{h, n};
  };
  const std::vector<at::Tensor> hn = checkpoint(half, {x});
  const at::Tensor n = hn.size() > 1 ? hn[1] : post_attention_layernorm->forward(hn[0]);
  return hn[0] + moe_mlp->forward(n);
}

}  // namespace sluice
